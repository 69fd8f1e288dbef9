"""``ocistore images ...``: image records and the operations on them (ctr's ``images`` verbs)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ocistore import errors
from ocistore.cli import inspect, pull
from ocistore.cli.args import add_json_flag, for_each
from ocistore.cli.context import Context
from ocistore.cli.describe import image_json, image_size
from ocistore.cli.output import format_labels, human_size, print_json, print_table
from ocistore.cli.registry import add_registry_options, registry_options
from ocistore.images.image import completeness, image_platforms
from ocistore.metadata.images import Image
from ocistore.oci.reference import parse_reference

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``images`` group (alias ``image``, ``i``) and its verbs."""
    group = sub.add_parser("images", aliases=["image", "i"],
                           help="images: fetch, pull, list, import, export ...")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    _register_remote(verbs)
    _register_records(verbs)
    _register_archives(verbs)
    _register_inspection(verbs)



def _register_remote(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("fetch", help="download an image's blobs and record it, without unpacking")
    pull.add_fetch_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=pull.cmd_fetch)

    p = verbs.add_parser("pull", help="fetch and unpack an image")
    pull.add_pull_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=pull.cmd_pull)

    p = verbs.add_parser("convert", help="rewrite an image's layers as eStargz into a new image DST")
    p.add_argument("--estargz", action="store_true", required=True,
                   help="convert to eStargz (the only format; required, as with ctr-remote)")
    p.add_argument("--estargz-prioritized-files", metavar="FILE", type=Path,
                   help="file listing paths (one per line) to put first, before .prefetch.landmark")
    p.add_argument("--estargz-chunk-size", metavar="BYTES", type=int, default=4 << 20,
                   help="split regular files into chunks of this size (default 4 MiB)")
    p.add_argument("--estargz-compression-level", metavar="N", type=int, default=9,
                   help="gzip level 0-9 (default 9, as stargz-snapshotter)")
    p.add_argument("--no-oci", dest="oci", action="store_false",
                   help="keep Docker media types for a Docker image (default: write OCI, as ctr-remote --oci)")
    pull.add_platform_argument(p)
    add_json_flag(p)
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p.set_defaults(func=cmd_convert)

    p = verbs.add_parser("push", help="upload an image from the store to a registry")
    pull.add_push_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=pull.cmd_push)

    p = verbs.add_parser("unpack", help="unpack a fetched image into a snapshotter; prints the top chain ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--rm", action="store_true",
                   help="instead remove the snapshots only this image uses, keeping its blobs")
    pull.add_snapshotter_argument(p)
    pull.add_platform_argument(p)
    p.set_defaults(func=cmd_unpack)


def _register_records(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("ls", aliases=["list"], help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="print only names")
    add_json_flag(p)
    p.add_argument("filters", nargs="*", metavar="FILTER", help='containerd filters, e.g. name~=debian')
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("rm", aliases=["remove", "delete", "del"],
                         help="delete image records (data goes at the next gc)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--sync", action="store_true", help="collect garbage before returning")
    p.set_defaults(func=cmd_rm)

    p = verbs.add_parser("tag", help="record the image SRC under the name DST too")
    p.add_argument("source", metavar="SRC")
    p.add_argument("targets", nargs="+", metavar="DST")
    p.add_argument("--force", "-f", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_tag)


def _register_archives(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("import", help="import an OCI layout (dir or tar) or a docker-archive")
    p.add_argument("file", metavar="FILE", help="archive file or layout directory ('-' = stdin)")
    p.add_argument("--fetch-only", "--no-unpack", action="store_true",
                   help="store the blobs only; unpack later (or lazily on the first container create)")
    pull.add_platform_argument(p)
    p.add_argument("--all-platforms", action="store_true", help="import every platform")
    pull.add_snapshotter_argument(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_import)

    p = verbs.add_parser("export", help="write images to an OCI layout tar (or docker-archive)")
    p.add_argument("out", metavar="OUT", help="output tar; an existing directory gets a layout; '-' = stdout")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--format", choices=("oci", "docker"), default="oci", help="archive format (default: oci)")
    pull.add_platform_argument(p)
    p.add_argument("--all-platforms", action="store_true", help="export every platform present")
    p.set_defaults(func=cmd_export)


def _register_inspection(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("size", help="compressed size of images for a platform")
    p.add_argument("names", nargs="+", metavar="NAME")
    pull.add_platform_argument(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_size)

    p = verbs.add_parser("check", help="is each image complete (all blobs present) and unpacked?")
    p.add_argument("names", nargs="*", metavar="NAME", help="images to check (default: all)")
    pull.add_snapshotter_argument(p)
    pull.add_platform_argument(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_check)

    p = verbs.add_parser("prefetch", help="fetch the chunks of files of a lazily fetched eStargz image ahead of reads")
    p.add_argument("name", metavar="IMAGE")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files to fetch whole")
    p.add_argument("--profile", metavar="FILE",
                   help="JSON of path -> [[start, end], ...] (or null: whole), such as `containers profile` "
                        "writes ('-': standard input)")
    pull.add_platform_argument(p)
    add_registry_options(p)
    p.set_defaults(func=cmd_prefetch)

    inspect.register(verbs)


# -- records ---------------------------------------------------------------------------------------------
def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``images ls``: REF TYPE DIGEST SIZE PLATFORMS LABELS."""
    store = ctx.store
    images = sorted(store.images.list(args.filters or None), key=lambda i: i.name)
    if ctx.json:
        print_json(ctx.stdout, [image_json(store, img) for img in images])
    elif args.quiet:
        for img in images:
            ctx.out(img.name)
    else:
        print_table(ctx.stdout, ("REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"),
                    [_ls_row(ctx, img) for img in images])
    return 0


def _ls_row(ctx: Context, img: Image) -> tuple[str, ...]:
    size = image_size(ctx.store, img)
    return (img.name, img.target.media_type, img.target.digest, "-" if size is None else human_size(size),
            ",".join(image_platforms(ctx.store.content, img.target)) or "-", format_labels(img.labels))


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``images rm NAME... [--sync]``."""
    store = ctx.store

    def delete(name: str) -> None:
        store.images.delete(store.images.find(name).name)
        if not ctx.json:
            ctx.out(name)

    status = for_each(ctx, args.names, delete)
    if args.sync:
        store.gc()
    return status


def cmd_tag(ctx: Context, args: argparse.Namespace) -> int:
    """``images tag SRC DST...``: new records pointing at SRC's target."""
    store = ctx.store
    source = store.images.find(args.source)

    def tag(target: str) -> None:
        name = str(parse_reference(target))
        image = Image(name=name, target=source.target, labels=dict(source.labels))
        try:
            store.images.create(image)
        except errors.AlreadyExists:
            if not args.force:
                msg = f"image {name!r} already exists; use --force to replace it"
                raise errors.AlreadyExists(msg) from None
            store.images.update(image)
        ctx.out(name)

    return for_each(ctx, args.targets, tag)


# -- operations ------------------------------------------------------------------------------------------
def cmd_unpack(ctx: Context, args: argparse.Namespace) -> int:
    """``images unpack NAME``: prints the top chain ID; ``--rm`` prints the chain IDs removed."""
    name = ctx.store.images.find(args.name).name
    if args.rm:
        removed = ctx.store.remove_unpacked(name, snapshotter=args.snapshotter, platform=args.platform)
        if ctx.json:
            print_json(ctx.stdout, {"name": name, "snapshotter": args.snapshotter, "removed": removed})
        else:
            for chain in removed:
                ctx.out(chain)
        return 0
    with pull.progress_of(ctx) as progress:
        chain_id = ctx.store.unpack(name, snapshotter=args.snapshotter, progress=progress,
                                    platform=args.platform)
    if ctx.json:
        print_json(ctx.stdout, {"name": name, "snapshotter": args.snapshotter, "chain_id": chain_id})
    else:
        ctx.out(chain_id)
    return 0


def cmd_convert(ctx: Context, args: argparse.Namespace) -> int:
    """``images convert --estargz SRC DST``: prints DST."""
    prioritized = None
    if args.estargz_prioritized_files is not None:
        try:
            text = args.estargz_prioritized_files.read_text()
        except FileNotFoundError:
            path = str(args.estargz_prioritized_files)
            raise errors.NotFound(f"prioritized files list {path!r} does not exist") from None
        prioritized = [line.strip() for line in text.splitlines() if line.strip()]
    name = ctx.store.images.find(args.source).name
    image = ctx.store.convert(name, "estargz", prioritized, dst=str(parse_reference(args.target)),
                              chunk_size=args.estargz_chunk_size,
                              compression_level=args.estargz_compression_level, platform=args.platform,
                              oci=args.oci)
    if ctx.json:
        print_json(ctx.stdout, image_json(ctx.store, image))
    else:
        ctx.out(image.name)
    return 0


@contextmanager
def _spooled_stdin(ctx: Context) -> Iterator[Path]:
    """stdin copied to a temporary file under the root's ``tmp/`` (an import needs to seek)."""
    fd, name = tempfile.mkstemp(prefix="cli-import-", suffix=".tar", dir=ctx.store.root / "tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(ctx.stdin_bytes, f, 1 << 20)
        yield Path(name)
    finally:
        os.unlink(name)


def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    """``images import FILE``: prints each imported image."""
    store = ctx.store
    with pull.progress_of(ctx) as progress, _input_path(ctx, args.file) as path:
        images = store.import_archive(path, fetch_only=args.fetch_only, platform=args.platform,
                                      snapshotter=args.snapshotter, all_platforms=args.all_platforms,
                                      progress=progress)
    if ctx.json:
        print_json(ctx.stdout, [image_json(store, img) for img in images])
    else:
        for img in images:
            ctx.out(f"{img.name} {img.target.digest}")
    return 0


@contextmanager
def _input_path(ctx: Context, file: str) -> Iterator[Path]:
    if file != "-":
        yield Path(file)
        return
    with _spooled_stdin(ctx) as path:
        yield path


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    """``images export OUT NAME...`` (ctr's argument order)."""
    store = ctx.store
    names = [store.images.find(n).name for n in args.names]
    if args.out != "-":
        store.export_archive(args.out, names, platform=args.platform, all_platforms=args.all_platforms,
                             format=args.format)
        return 0
    with tempfile.TemporaryDirectory(prefix="cli-export-", dir=store.root / "tmp") as tmp:
        path = Path(tmp) / "export.tar"
        store.export_archive(path, names, platform=args.platform, all_platforms=args.all_platforms,
                             format=args.format)
        with open(path, "rb") as f:
            out = ctx.stdout_bytes
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
    return 0


# -- inspection ------------------------------------------------------------------------------------------
def cmd_size(ctx: Context, args: argparse.Namespace) -> int:
    """``images size NAME...``: compressed bytes of the platform's blobs (index included)."""
    store = ctx.store
    results: list[dict[str, object]] = []

    def size(name: str) -> None:
        image = store.images.find(name)
        results.append({"name": image.name, "size": store.image_size(image.name, platform=args.platform)})

    status = for_each(ctx, args.names, size)
    if ctx.json:
        print_json(ctx.stdout, results)
    else:
        print_table(ctx.stdout, ("REF", "SIZE", "BYTES"),
                    [(str(r["name"]), human_size(int(str(r["size"]))), str(r["size"])) for r in results])
    return status


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    """``images check [NAME...]``: REF TYPE DIGEST STATUS SIZE UNPACKED, as ctr prints it."""
    store = ctx.store
    if args.names:
        images: list[Image] = []
        status = for_each(ctx, args.names, lambda n: images.append(store.images.find(n)))
    else:
        images, status = sorted(store.images.list(), key=lambda i: i.name), 0
    rows = [_check_row(ctx, img, args) for img in images]
    if ctx.json:
        print_json(ctx.stdout, rows)
    else:
        print_table(ctx.stdout, ("REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"),
                    [(r["name"], r["media_type"], r["digest"], r["status"],
                      "-" if r["size"] is None else human_size(r["size"]), str(r["unpacked"]).lower())
                     for r in rows])
    return status


def _check_row(ctx: Context, img: Image, args: argparse.Namespace) -> dict[str, Any]:
    store = ctx.store
    state = completeness(store.content, img.target, args.platform)
    try:
        # as ctr: whether the snapshotter holds the chain, whatever blobs are left (discarded
        # layers are missing from the STATUS count but the image is unpacked)
        unpacked = store.is_unpacked(img.name, snapshotter=args.snapshotter, platform=args.platform)
    except errors.Error:
        unpacked = False
    return {**attrs.asdict(state), "name": img.name, "media_type": img.target.media_type,
            "digest": img.target.digest, "status": state.status, "complete": state.complete,
            "size": image_size(store, img, args.platform), "unpacked": unpacked}


def cmd_prefetch(ctx: Context, args: argparse.Namespace) -> int:
    """``images prefetch IMAGE [PATH...] [--profile FILE]``: what it fetched, in how many requests."""
    files: dict[str, list[tuple[int, int]] | None] = dict.fromkeys(args.paths)
    if args.profile is not None:
        files.update(read_profile_file(ctx, args.profile))
    if not files:
        raise errors.InvalidArgument("name files to prefetch: PATH arguments or --profile FILE")
    result = ctx.store.prefetch(args.name, files, platform=args.platform,
                                **registry_options(ctx, args, args.name))
    for path in result.skipped:
        ctx.stderr.write(f"ocistore: skipped {path!r}: not a regular file of the image\n")
    if ctx.json:
        print_json(ctx.stdout, attrs.asdict(result))
    else:
        ctx.out(f"{result.files} files, {result.chunks} chunks ({human_size(result.bytes)}): "
                f"{result.requests} requests, {human_size(result.fetched_bytes)} fetched")
    return 0


def read_profile_file(ctx: Context, path: str) -> dict[str, list[tuple[int, int]] | None]:
    """A profile as JSON (``{"path": [[start, end], ...] or null}``); InvalidArgument if malformed."""
    import json

    try:
        text = ctx.stdin.read() if path == "-" else Path(path).read_text()
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return {str(p): None if rs is None else [(int(a), int(b)) for a, b in rs] for p, rs in doc.items()}
    except (OSError, ValueError, TypeError) as exc:
        raise errors.InvalidArgument(f"profile {path}: {exc}") from None
