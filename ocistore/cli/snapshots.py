"""``ocistore snapshots ...``: one snapshotter's snapshots (ctr's ``snapshots`` verbs)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable

from ocistore.cli.args import for_each, parse_labels, parse_size, size_arg
from ocistore.cli.context import Context, UsageError
from ocistore.cli.output import human_size, print_json, print_table
from ocistore.snapshots.types import Mount, SnapshotInfo, Snapshotter

__all__ = ["cmd_umount", "mount_commands", "mount_on", "register"]

DEFAULT = "overlayfs"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``snapshots`` group (alias ``snapshot``) and its verbs."""
    group = sub.add_parser("snapshots", aliases=["snapshot"],
                           help="snapshots: list, prepare, commit, mounts ...")
    group.add_argument("--snapshotter", default=DEFAULT, help="snapshotter (default: overlayfs)")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = _verb(verbs, "ls", "list snapshots: KEY PARENT KIND", aliases=["list"])
    p.add_argument("filters", nargs="*", metavar="FILTER", help="containerd filters, e.g. kind==committed")
    p.set_defaults(func=cmd_ls)

    for name, func in (("prepare", cmd_prepare), ("view", cmd_view)):
        kind = "an active (writable)" if name == "prepare" else "a read-only view"
        p = _verb(verbs, name, f"create {kind} snapshot KEY on the committed PARENT")
        p.add_argument("key", metavar="KEY")
        p.add_argument("parent", nargs="?", default="", metavar="PARENT")
        p.add_argument("--target", "-t", metavar="DIR", help="print the mount command(s) for DIR")
        p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the snapshot")
        p.set_defaults(func=func)

    p = _verb(verbs, "commit", "commit the active snapshot KEY as NAME")
    p.add_argument("name", metavar="NAME")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the snapshot")
    p.set_defaults(func=cmd_commit)

    p = _verb(verbs, "rm", "remove snapshots (they must have no children)",
              aliases=["remove", "delete", "del"])
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.set_defaults(func=cmd_rm)

    p = _verb(verbs, "mounts", "print the mount command(s) that mount KEY on TARGET", aliases=["m"])
    p.add_argument("target", metavar="TARGET")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_mounts)

    p = _verb(verbs, "mount", "mount the active snapshot or view KEY on the directory TARGET (needs root)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("target", metavar="TARGET")
    p.set_defaults(func=cmd_mount)

    p = _verb(verbs, "umount", "unmount what is mounted on TARGET", aliases=["unmount"])
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--lazy", "-l", action="store_true", help="detach a mount still in use (MNT_DETACH)")
    p.set_defaults(func=cmd_umount)

    p = _verb(verbs, "usage", "disk usage of snapshots (their own data): KEY SIZE INODES")
    p.add_argument("key", nargs="?", metavar="KEY", help="one snapshot (default: all)")
    p.add_argument("--bytes", "-b", action="store_true", help="sizes in bytes")
    p.set_defaults(func=cmd_usage)

    p = _verb(verbs, "tree", "show snapshots as a tree of parents and children")
    p.set_defaults(func=cmd_tree)

    p = _verb(verbs, "evict", "remove the unpacked layers of images no container uses, least recently "
              "used first, down to SIZE (blobs stay; the next container create unpacks again)")
    p.add_argument("--target", type=size_arg, default=None, metavar="SIZE",
                   help="bytes the committed snapshots may keep, e.g. 10G (default: $OCISTORE_SNAPSHOT_BUDGET)")
    p.add_argument("--dry-run", "-n", action="store_true", help="print what would be removed, remove nothing")
    p.add_argument("--bytes", "-b", action="store_true", help="sizes in bytes")
    p.set_defaults(func=cmd_evict)

    p = _verb(verbs, "info", "everything known of snapshot KEY (JSON)")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_info)


def _verb(verbs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
          aliases: list[str] | None = None) -> argparse.ArgumentParser:
    p = verbs.add_parser(name, help=help_text, aliases=aliases or [])
    p.add_argument("--snapshotter", default=argparse.SUPPRESS, help="snapshotter (default: overlayfs)")
    return p


def _sn(ctx: Context, args: argparse.Namespace) -> Snapshotter:
    return ctx.store.snapshots(args.snapshotter)


def mount_commands(mounts: Iterable[Mount], target: str) -> list[str]:
    """``mount -t TYPE SOURCE TARGET -o OPTIONS`` per mount, as ``ctr snapshots mounts`` prints."""
    import shlex

    lines = []
    for m in mounts:
        cmd = ["mount", "-t", m.type, m.source, target]
        if m.options:
            cmd += ["-o", ",".join(m.options)]
        lines.append(shlex.join(cmd))
    return lines


def _print_mounts(ctx: Context, mounts: list[Mount], target: str | None) -> None:
    if ctx.json:
        print_json(ctx.stdout, mounts)
    elif target:
        for line in mount_commands(mounts, target):
            ctx.out(line)


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots ls``."""
    infos = sorted(_sn(ctx, args).walk(args.filters or None), key=lambda i: i.name)
    if ctx.json:
        print_json(ctx.stdout, infos)
    else:
        print_table(ctx.stdout, ("KEY", "PARENT", "KIND"),
                    [(i.name, i.parent, i.kind.display) for i in infos])
    return 0


def cmd_prepare(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots prepare KEY [PARENT]``."""
    labels = parse_labels(args.label) or None
    mounts = _sn(ctx, args).prepare(args.key, args.parent, labels=labels)
    _print_mounts(ctx, mounts, args.target)
    return 0


def cmd_view(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots view KEY [PARENT]``."""
    labels = parse_labels(args.label) or None
    mounts = _sn(ctx, args).view(args.key, args.parent, labels=labels)
    _print_mounts(ctx, mounts, args.target)
    return 0


def cmd_commit(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots commit NAME KEY``."""
    _sn(ctx, args).commit(args.name, args.key, labels=parse_labels(args.label) or None)
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots rm KEY...``."""
    return for_each(ctx, args.keys, _sn(ctx, args).remove)


def cmd_mounts(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots mounts TARGET KEY``."""
    _print_mounts(ctx, _sn(ctx, args).mounts(args.key), args.target)
    return 0


def mount_on(ctx: Context, mounts: list[Mount], target: str) -> int:
    """Mount ``mounts`` on ``target`` (an existing directory) and print the target."""
    if not os.path.isdir(target):
        raise UsageError(f"mount target {target} is not a directory; create it first")
    from ocistore import mount  # loaded by the verbs that mount

    mount.mount(mounts, target)
    ctx.out(os.path.abspath(target))
    return 0


def cmd_mount(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots mount KEY TARGET``: a real mount (overlay or bind)."""
    return mount_on(ctx, _sn(ctx, args).mounts(args.key), args.target)


def cmd_umount(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots umount TARGET`` (also ``containers umount``)."""
    from ocistore import mount  # loaded by the verbs that mount

    mount.unmount(args.target, detach=args.lazy)
    return 0


def cmd_usage(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots usage [KEY]``."""
    sn = _sn(ctx, args)
    keys = [args.key] if args.key else sorted(i.name for i in sn.walk())
    usages = [(k, sn.usage(k)) for k in keys]
    if ctx.json:
        print_json(ctx.stdout, [{"key": k, "size": u.size, "inodes": u.inodes} for k, u in usages])
        return 0
    size: Callable[[int], str] = str if args.bytes else human_size
    print_table(ctx.stdout, ("KEY", "SIZE", "INODES"), [(k, size(u.size), str(u.inodes)) for k, u in usages])
    return 0


def tree_lines(infos: Iterable[SnapshotInfo]) -> list[str]:
    """ctr's ``snapshots tree`` drawing: roots first, children indented under ``\\_``."""
    by_name = {i.name: i for i in infos}
    children: dict[str, list[str]] = {}
    for info in by_name.values():
        parent = info.parent if info.parent in by_name else ""
        children.setdefault(parent, []).append(info.name)
    lines: list[str] = []

    def visit(name: str, level: int) -> None:
        prefix = "  " * level + ("\\_" if level else "")
        lines.append(f"{prefix} {name}")
        for child in sorted(children.get(name, [])):
            visit(child, level + 1)

    for root in sorted(children.get("", [])):
        visit(root, 0)
    return lines


def cmd_tree(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots tree``."""
    infos = list(_sn(ctx, args).walk())
    if ctx.json:
        print_json(ctx.stdout, infos)
        return 0
    for line in tree_lines(infos):
        ctx.out(line)
    return 0


def budget_target(ctx: Context, target: int | None) -> int:
    """``--target``, else ``$OCISTORE_SNAPSHOT_BUDGET``; a usage error without either."""
    if target is not None:
        return target
    env = os.environ.get("OCISTORE_SNAPSHOT_BUDGET", "")
    if not env:
        raise UsageError("snapshots evict: give --target SIZE (or set OCISTORE_SNAPSHOT_BUDGET)")
    return parse_size(env)


def cmd_evict(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots evict [--target SIZE] [--dry-run]``: one row per layer removed."""
    target = budget_target(ctx, args.target)
    before = ctx.store.unpacked_bytes()
    layers = ctx.store.evict_layers(target, dry_run=args.dry_run)
    freed = sum(e.size for e in layers)
    if ctx.json:
        print_json(ctx.stdout, {"target": target, "before": before, "after": before - freed,
                                "dry_run": args.dry_run, "evicted": layers})
        return 0
    size: Callable[[int], str] = str if args.bytes else human_size
    if layers:
        print_table(ctx.stdout, ("SNAPSHOTTER", "CHAIN ID", "SIZE", "IMAGES"),
                    [(e.snapshotter, e.chain_id, size(e.size), ",".join(e.images)) for e in layers])
    verb = "would free" if args.dry_run else "freed"
    ctx.out(f"{verb} {size(freed)} in {len(layers)} layers: unpacked {size(before)} -> "
            f"{size(before - freed)} (target {size(target)})")
    return 0


def cmd_info(ctx: Context, args: argparse.Namespace) -> int:
    """``snapshots info KEY``: the SnapshotInfo as JSON."""
    print_json(ctx.stdout, _sn(ctx, args).stat(args.key))
    return 0
