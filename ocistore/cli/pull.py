"""``fetch`` and ``pull`` (shared by ``content fetch``, ``images fetch`` and ``images pull``)."""

from __future__ import annotations

import argparse

from ocistore.cli.args import (
    add_platform_argument,
    add_snapshotter_argument,
    parse_size,
    progress_of,
    size_arg,
)
from ocistore.cli.context import Context, UsageError
from ocistore.cli.describe import image_json
from ocistore.cli.output import print_json
from ocistore.cli.registry import add_registry_options, registry_options
from ocistore.metadata.images import Image
from ocistore.transfer import DEFAULT_THRESHOLD

__all__ = [
    "DEFAULT_UNPACK_THRESHOLD",
    "add_fetch_arguments",
    "add_platform_argument",
    "add_pull_arguments",
    "add_push_arguments",
    "add_snapshotter_argument",
    "cmd_fetch",
    "cmd_pull",
    "cmd_push",
    "parse_size",
    "progress_of",
    "size_arg",
]

DEFAULT_UNPACK_THRESHOLD = DEFAULT_THRESHOLD


def add_fetch_arguments(p: argparse.ArgumentParser) -> None:
    """REF, platform selection and registry options."""
    p.add_argument("ref", metavar="REF", help="image reference, e.g. docker.io/library/debian:12")
    add_platform_argument(p)
    p.add_argument("--all-platforms", action="store_true", help="fetch every platform of an index")
    p.add_argument("--non-strict", action="store_true",
                   help="also accept compatible platforms (amd64 takes 386, arm64 takes arm/v8 ...)")
    p.add_argument("--lazy", action="store_true",
                   help="eStargz layers: fetch only their footer and TOC (HTTP Range); chunks are read on demand")
    add_registry_options(p)


def add_pull_arguments(p: argparse.ArgumentParser) -> None:
    """REF, snapshotter, platform, unpack policy and registry options."""
    p.add_argument("ref", metavar="REF", help="image reference, e.g. docker.io/library/debian:12")
    add_snapshotter_argument(p)
    add_platform_argument(p)
    p.add_argument("--unpack", choices=("always", "never", "auto"), default="always",
                   help="always unpack (default), never (fetch only), or auto: unpack only images "
                        "smaller than --unpack-threshold")
    p.add_argument("--unpack-threshold", type=size_arg, default=DEFAULT_UNPACK_THRESHOLD, metavar="SIZE",
                   help=f"compressed size limit for --unpack auto (default: {DEFAULT_THRESHOLD >> 20}M)")
    p.add_argument("--non-strict", action="store_true", help="also accept compatible platforms")
    p.add_argument("--discard-layers", action="store_true",
                   help="drop the compressed layer blobs once unpacked (they go at the next gc)")
    add_registry_options(p)


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    """NAME, REF, platform selection, upload options and registry options."""
    p.add_argument("name", metavar="NAME", help="the image in the store (debian:12 finds docker.io/library/debian:12)")
    p.add_argument("ref", metavar="REF", help="where to push it, e.g. registry.example:5000/team/debian:12")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="push only this platform's manifest (the tag then names that manifest, not the index)")
    p.add_argument("--all-platforms", action="store_true",
                   help="push the whole index (the default; fails if a platform is missing from the store)")
    p.add_argument("--non-strict", action="store_true", help="--platform also accepts compatible platforms")
    p.add_argument("--chunk-size", type=size_arg, metavar="SIZE",
                   help="upload blobs in chunks of SIZE (PATCH requests) instead of one PUT each")
    p.add_argument("--mount-from", action="append", default=[], metavar="REPO",
                   help="try a cross-repository mount from REPO of the destination registry (repeatable)")
    add_registry_options(p)


def _print_result(ctx: Context, image: Image, unpacked: bool | None = None) -> None:
    if ctx.json:
        obj = image_json(ctx.store, image)
        if unpacked is not None:
            obj["unpacked"] = unpacked
        print_json(ctx.stdout, obj)
        return
    suffix = "" if unpacked is None else (" (unpacked)" if unpacked else " (fetched only)")
    ctx.out(f"{image.name} {image.target.digest}{suffix}")


def cmd_fetch(ctx: Context, args: argparse.Namespace) -> int:
    """Download the image's blobs for the platform(s) and record it; nothing is unpacked."""
    options = registry_options(ctx, args, args.ref)
    with progress_of(ctx) as progress:
        image = ctx.store.fetch(args.ref, platform=args.platform, strict=not args.non_strict,
                                all_platforms=args.all_platforms, progress=progress, lazy=args.lazy, **options)
    _print_result(ctx, image)
    return 0


def cmd_pull(ctx: Context, args: argparse.Namespace) -> int:
    """Fetch one platform and unpack it, subject to ``--unpack`` (always, never, auto)."""
    options = registry_options(ctx, args, args.ref)
    store = ctx.store
    with progress_of(ctx) as progress:
        image = store.pull(args.ref, snapshotter=args.snapshotter, platform=args.platform,
                           progress=progress, strict=not args.non_strict, unpack=args.unpack,
                           threshold=args.unpack_threshold, discard_layers=args.discard_layers, **options)
    unpacked = args.unpack == "always" or store.is_unpacked(image.name, snapshotter=args.snapshotter,
                                                            platform=args.platform)
    _print_result(ctx, image, unpacked)
    return 0


def cmd_push(ctx: Context, args: argparse.Namespace) -> int:
    """Upload an image to a registry: the whole image, or one platform's manifest."""
    if args.platform and args.all_platforms:
        raise UsageError("--platform and --all-platforms exclude each other")
    options = registry_options(ctx, args, args.ref)
    store = ctx.store
    name = store.images.find(args.name).name
    with progress_of(ctx) as progress:
        desc = store.push(name, args.ref, platform=args.platform, all_platforms=args.all_platforms,
                          progress=progress, strict=not args.non_strict, chunk_size=args.chunk_size,
                          mount_from=tuple(args.mount_from), **options)
    if ctx.json:
        print_json(ctx.stdout, {"name": name, "ref": args.ref, "digest": desc.digest,
                                "media_type": desc.media_type, "size": desc.size})
    else:
        ctx.out(f"{args.ref} {desc.digest}")
    return 0
