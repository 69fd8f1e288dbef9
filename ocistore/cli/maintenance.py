"""``ocistore gc``, ``du``, ``check`` and ``compile``: whole-root maintenance, and byte-compiling the package."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import attrs

from ocistore.cli.args import add_json_flag, parse_size, size_arg
from ocistore.cli.context import Context
from ocistore.cli.output import human_size, print_json, print_table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gc``, ``du`` and ``check``."""
    p = sub.add_parser("gc", help="remove everything no image, container, lease or root label keeps")
    add_json_flag(p)
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("du", help="bytes on disk: content, ingests, snapshots, metadata")
    p.add_argument("--bytes", "-b", action="store_true", help="sizes in bytes")
    p.add_argument("--images", action="store_true",
                   help="per image: compressed and unpacked bytes, and how much of each only it uses")
    p.add_argument("--what-if", action="store_true",
                   help="per image, what fetch-only, pull and pull --discard-layers would take, what unpacking "
                        "would add (estimated, nothing unpacked); then what `snapshots evict` would free")
    p.add_argument("--snapshotter", default="overlayfs", help="with --what-if: the snapshotter (default overlayfs)")
    p.add_argument("--target", type=size_arg, default=None, metavar="SIZE",
                   help="with --what-if: the eviction target (default: $OCISTORE_SNAPSHOT_BUDGET, else 0)")
    add_json_flag(p)
    p.set_defaults(func=cmd_du)

    p = sub.add_parser("check", help="verify blobs, records and snapshot chains (exit 1 on problems)")
    p.add_argument("--repair", action="store_true", help="remove orphaned blobs and snapshot directories")
    add_json_flag(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", help="byte-compile ocistore's modules (once, after installing: faster starts)")
    p.add_argument("--optimize", "-O", type=int, choices=(0, 1, 2), default=0,
                   help="optimization level of the bytecode (as python -O; default 0)")
    p.set_defaults(func=cmd_compile)



def cmd_compile(ctx: Context, args: argparse.Namespace) -> int:
    """``compile``: ``python -m compileall`` over the installed package; opens no store.

    The bytecode goes where the interpreter looks for it: ``__pycache__`` next to the
    modules, or under ``PYTHONPYCACHEPREFIX`` when that is set. Exit 1 when a module
    could not be written (a read-only install: compile as the installing user).
    """
    import compileall
    import sys

    import ocistore

    package = Path(ocistore.__file__).parent
    # compile even with PYTHONDONTWRITEBYTECODE set: writing bytecode is the point
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        ok = compileall.compile_dir(str(package), quiet=1, optimize=args.optimize, workers=1)
    finally:
        sys.dont_write_bytecode = saved
    where = sys.pycache_prefix or f"{package}/**/__pycache__"
    ctx.out(f"compiled {package} into {where}" if ok else f"some modules of {package} could not be compiled")
    return 0 if ok else 1


def cmd_gc(ctx: Context, args: argparse.Namespace) -> int:
    """``gc``: one line of what was removed."""
    stats = ctx.store.gc()
    if ctx.json:
        print_json(ctx.stdout, stats)
    else:
        ctx.out(f"removed {stats.removed_content} blobs and {stats.removed_snapshots} snapshots, "
                f"freed {human_size(stats.bytes_freed)} in {stats.duration:.2f} s")
    return 0


def cmd_du(ctx: Context, args: argparse.Namespace) -> int:
    """``du``: the DiskUsage fields (integers in JSON); ``--images``: one row per image."""
    if args.what_if:
        return _du_what_if(ctx, args)
    if args.images:
        return _du_images(ctx, args)
    usage = ctx.store.disk_usage()
    fields = {k: int(v) for k, v in attrs.asdict(usage).items()}
    if ctx.json:
        print_json(ctx.stdout, fields)
        return 0
    size: Callable[[int], str] = str if args.bytes else human_size
    print_table(ctx.stdout, ("WHAT", "SIZE"), [(k.upper(), size(v)) for k, v in fields.items()])
    return 0


def _du_images(ctx: Context, args: argparse.Namespace) -> int:
    rows = ctx.store.image_usage()
    if ctx.json:
        print_json(ctx.stdout, rows)
        return 0
    size: Callable[[int], str] = str if args.bytes else human_size
    sns = [u.snapshotter for u in rows[0].unpacked] if rows else []
    header = ["IMAGE", "COMPRESSED", "(OWN)"]
    for sn in sns:
        header += [f"UNPACKED {sn.upper()}", "(OWN)", "(EVICTABLE)", "(SAVED BY DEDUP)"]
    table = []
    for r in rows:
        cells = [r.name, size(r.compressed), size(r.compressed_exclusive)]
        for u in r.unpacked:
            cells += [size(u.unpacked) if u.layers else "-", size(u.exclusive) if u.layers else "-",
                      size(u.evictable) if u.layers else "-", size(u.dedup_saved) if u.layers else "-"]
        table.append(cells)
    print_table(ctx.stdout, header, table)
    saved = sum(u.dedup_saved for r in rows for u in r.unpacked)
    if saved:
        ctx.out(f"saved by dedup: {size(ctx.store.dedup_saved())} in total")
    return 0


def _du_what_if(ctx: Context, args: argparse.Namespace) -> int:
    target = args.target
    if target is None:
        env = os.environ.get("OCISTORE_SNAPSHOT_BUDGET", "")
        target = parse_size(env) if env else 0
    modes = ctx.store.what_if(args.snapshotter)
    before = ctx.store.unpacked_bytes()
    layers = ctx.store.evict_layers(target, dry_run=True)
    freed = sum(e.size for e in layers)
    if ctx.json:
        print_json(ctx.stdout, {"target": target, "unpacked": before, "evictable": freed, "evicted": layers,
                                "modes": modes})
        return 0
    size: Callable[[int], str] = str if args.bytes else human_size
    rows = [(e.name, size(e.fetched), size(e.pulled), size(e.discarded), size(e.unpack_adds),
             f"{e.unpacked_layers}/{e.layers}") for e in [*modes.images, modes.total]]
    print_table(ctx.stdout, ("IMAGE", "FETCH-ONLY", "PULLED", "PULLED+DISCARD", "UNPACK WOULD ADD", "UNPACKED"), rows)
    ctx.out(f"store now {size(modes.now)}; the (all images) row counts shared blobs and layers once and adds "
            f"what else the store holds (metadata, containers)")
    print_table(ctx.stdout, ("SNAPSHOTTER", "CHAIN ID", "SIZE", "IMAGES"),
                [(e.snapshotter, e.chain_id, size(e.size), ",".join(e.images)) for e in layers])
    ctx.out(f"evict would free {size(freed)} of {size(before)} unpacked (target {size(target)})")
    return 0


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    """``check [--repair]``: ``ok``, or one line per problem; exit 1 while problems remain."""
    report = ctx.store.check(repair=args.repair)
    if ctx.json:
        print_json(ctx.stdout, report)
    else:
        for line in getattr(report, "repaired", []):
            ctx.out(f"repaired: {line}")
        for line in report.problems:
            ctx.out(f"problem: {line}")
        for line in getattr(report, "partial", []):
            ctx.out(f"partial: {line}")
        if report.ok:
            ctx.out("ok")
    return 0 if report.ok else 1
