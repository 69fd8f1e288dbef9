"""``ocistore content ...``: blobs of the namespace (ctr's ``content`` verbs)."""

from __future__ import annotations

import argparse
import shutil
from typing import BinaryIO

from ocistore.cli import pull
from ocistore.cli.args import add_json_flag, for_each, parse_labels
from ocistore.cli.context import Context
from ocistore.cli.output import age, format_labels, human_size, print_json, print_table
from ocistore.oci.descriptor import Descriptor

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``content`` group and its verbs."""
    group = sub.add_parser("content", help="blobs: fetch, list, read, ingest, label, remove")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("fetch", help="download an image's blobs and record the image (= images fetch)")
    pull.add_fetch_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=pull.cmd_fetch)

    p = verbs.add_parser("ls", aliases=["list"], help="list blobs")
    p.add_argument("-q", "--quiet", action="store_true", help="print only digests")
    add_json_flag(p)
    p.add_argument("filters", nargs="*", metavar="FILTER", help='containerd filters, e.g. labels."k"==v')
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("get", help="write a blob to stdout (DIGEST may be a unique prefix)")
    p.add_argument("digest", metavar="DIGEST")
    p.set_defaults(func=cmd_get)

    p = verbs.add_parser("ingest", help="store a file (or stdin) as a blob; prints its digest")
    p.add_argument("--expected", metavar="DIGEST", help="fail unless the data hashes to DIGEST")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the blob")
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="file to read ('-' = stdin)")
    p.set_defaults(func=cmd_ingest)

    p = verbs.add_parser("rm", aliases=["remove", "delete", "del"],
                         help="forget blobs in this namespace (bytes go at the next gc)")
    p.add_argument("digests", nargs="+", metavar="DIGEST")
    p.set_defaults(func=cmd_rm)

    p = verbs.add_parser("label", help="set labels on a blob (KEY= removes KEY)")
    p.add_argument("digest", metavar="DIGEST")
    p.add_argument("labels", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_label)

    p = verbs.add_parser("active", help="list ingests in progress")
    p.set_defaults(func=cmd_active)


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``content ls``: DIGEST SIZE AGE LABELS."""
    infos = sorted(ctx.store.content.walk(args.filters or None), key=lambda i: i.digest)
    if ctx.json:
        print_json(ctx.stdout, infos)
    elif args.quiet:
        for info in infos:
            ctx.out(info.digest)
    else:
        rows = [(i.digest, human_size(i.size) + (" (partial)" if i.partial else ""), age(i.created_at),
                 format_labels(i.labels)) for i in infos]
        print_table(ctx.stdout, ("DIGEST", "SIZE", "AGE", "LABELS"), rows)
    return 0


def cmd_get(ctx: Context, args: argparse.Namespace) -> int:
    """``content get DIGEST``: the blob's bytes on stdout."""
    with ctx.store.content.open(ctx.store.content.resolve(args.digest)) as blob:
        out = ctx.stdout_bytes
        shutil.copyfileobj(blob, out, 1 << 20)
        out.flush()
    return 0


def cmd_ingest(ctx: Context, args: argparse.Namespace) -> int:
    """``content ingest [FILE|-]``: commit the data as a blob and print its digest."""
    labels = parse_labels(args.label, allow_empty=False)
    if args.file == "-":
        desc = _ingest(ctx, ctx.stdin_bytes, args.expected, labels)
    else:
        with open(args.file, "rb") as f:
            desc = _ingest(ctx, f, args.expected, labels)
    if ctx.json:
        print_json(ctx.stdout, {"digest": desc.digest, "size": desc.size})
    else:
        ctx.out(desc.digest)
    return 0


def _ingest(ctx: Context, stream: BinaryIO, expected: str | None, labels: dict[str, str]) -> Descriptor:
    return ctx.store.content.ingest(stream, expected=expected or None, labels=labels or None)


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``content rm DIGEST...``."""
    content = ctx.store.content
    return for_each(ctx, args.digests, lambda d: content.delete(content.resolve(d)))


def cmd_label(ctx: Context, args: argparse.Namespace) -> int:
    """``content label DIGEST KEY=VALUE...``: set (or with an empty value remove) labels."""
    labels = parse_labels(args.labels)
    digest = ctx.store.content.resolve(args.digest)
    info = ctx.store.content.update(digest, labels, [f"labels.{k}" for k in labels])
    if ctx.json:
        print_json(ctx.stdout, info)
    else:
        ctx.out(f"{info.digest} {format_labels(info.labels)}")
    return 0


def cmd_active(ctx: Context, args: argparse.Namespace) -> int:
    """``content active``: REF SIZE AGE of each ingest."""
    statuses = sorted(ctx.store.content.statuses(), key=lambda s: s.ref)
    if ctx.json:
        print_json(ctx.stdout, statuses)
        return 0
    rows = [(s.ref, f"{human_size(s.offset)}/{human_size(s.total) if s.total else '?'}", age(s.started_at))
            for s in statuses]
    print_table(ctx.stdout, ("REF", "SIZE", "AGE"), rows)
    return 0
