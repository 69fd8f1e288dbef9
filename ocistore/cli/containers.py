"""``ocistore containers ...``: container records and their root filesystem snapshots."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocistore.cli.args import add_platform_argument, add_snapshotter_argument, for_each, parse_labels, progress_of
from ocistore.cli.context import Context
from ocistore.cli.output import format_labels, print_json, print_table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``containers`` group (alias ``container``, ``c``) and its verbs."""
    group = sub.add_parser("containers", aliases=["container", "c"],
                           help="containers: create (unpacking lazily), list, remove")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("create", help="create container ID with a writable snapshot of IMAGE")
    p.add_argument("id", metavar="ID")
    p.add_argument("image", metavar="IMAGE")
    add_snapshotter_argument(p)
    add_platform_argument(p)
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the container")
    p.add_argument("--lazy", action="store_true",
                   help="eStargz image not unpacked yet: a FUSE rootfs that reads files on first access "
                        "(a detached helper serves it until the container is removed)")
    p.add_argument("--no-fill", action="store_true",
                   help="with --lazy: no background unpack, only the chunks read are downloaded")
    p.add_argument("--prefetch-profile", metavar="FILE",
                   help="with --lazy: fetch the chunks of this profile (see `containers profile`) while the "
                        "rootfs starts, instead of the prioritized files")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("profile", help="print the byte ranges a lazy container's rootfs has served, as JSON "
                                         "for `images prefetch --profile`")
    p.add_argument("id", metavar="ID")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")
    p.set_defaults(func=cmd_profile)

    p = verbs.add_parser("ls", aliases=["list"], help="list containers")
    p.add_argument("-q", "--quiet", action="store_true", help="print only ids")
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("rm", aliases=["remove", "delete", "del"],
                         help="delete containers and their snapshots")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_rm)

    p = verbs.add_parser("mounts", help="print the mount command(s) of a container's root filesystem")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_mounts)

    p = verbs.add_parser("mount", help="mount container ID's root filesystem on the directory TARGET (needs root)")
    p.add_argument("id", metavar="ID")
    p.add_argument("target", metavar="TARGET")
    p.set_defaults(func=cmd_mount)

    p = verbs.add_parser("umount", aliases=["unmount"], help="unmount what is mounted on TARGET")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--lazy", "-l", action="store_true", help="detach a mount still in use (MNT_DETACH)")
    p.set_defaults(func=cmd_umount)


def _container_json(c: object) -> dict[str, object]:
    return {name: getattr(c, name) for name in
            ("id", "image", "snapshotter", "snapshot_key", "labels", "created_at", "updated_at")}


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    """``containers create ID IMAGE``: unpacks the image first if it was only fetched."""
    labels = parse_labels(args.label, allow_empty=False)
    prefetch = None
    if args.prefetch_profile is not None:
        from ocistore.cli.images import read_profile_file

        prefetch = read_profile_file(ctx, args.prefetch_profile)
    with progress_of(ctx, terminal_only=True) as progress:  # a lazy unpack takes seconds
        container = ctx.store.containers.create(args.id, args.image, snapshotter=args.snapshotter,
                                                labels=labels or None, platform=args.platform,
                                                progress=progress, lazy=args.lazy, fill=not args.no_fill,
                                                prefetch=prefetch)
    if ctx.json:
        print_json(ctx.stdout, _container_json(container))
    else:
        ctx.out(container.id)
    return 0


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``containers ls``: CONTAINER IMAGE SNAPSHOTTER LABELS."""
    containers = sorted(ctx.store.containers.list(), key=lambda c: c.id)
    if ctx.json:
        print_json(ctx.stdout, [_container_json(c) for c in containers])
    elif args.quiet:
        for c in containers:
            ctx.out(c.id)
    else:
        print_table(ctx.stdout, ("CONTAINER", "IMAGE", "SNAPSHOTTER", "LABELS"),
                    [(c.id, c.image, c.snapshotter, format_labels(c.labels)) for c in containers])
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``containers rm ID...``."""
    return for_each(ctx, args.ids, ctx.store.containers.delete)


def cmd_mounts(ctx: Context, args: argparse.Namespace) -> int:
    """``containers mounts TARGET ID``."""
    mounts = ctx.store.containers.get(args.id).mounts
    if ctx.json:
        print_json(ctx.stdout, mounts)
    else:
        from ocistore.cli.snapshots import mount_commands

        for line in mount_commands(mounts, args.target):
            ctx.out(line)
    return 0


def cmd_mount(ctx: Context, args: argparse.Namespace) -> int:
    """``containers mount ID TARGET``: a real mount of the container's root filesystem."""
    from ocistore.cli.snapshots import mount_on

    return mount_on(ctx, ctx.store.containers.get(args.id).mounts, args.target)


def cmd_umount(ctx: Context, args: argparse.Namespace) -> int:
    """``containers umount TARGET``: as ``snapshots umount``."""
    from ocistore.cli import snapshots

    return snapshots.cmd_umount(ctx, args)


def cmd_profile(ctx: Context, args: argparse.Namespace) -> int:
    """``containers profile ID [-o FILE]``: ``{"path": [[start, end], ...]}``."""
    import json

    profile = ctx.store.containers.get(args.id).read_profile()
    text = json.dumps({p: [list(r) for r in rs] for p, rs in profile.items()}, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        ctx.out(text)
    return 0
