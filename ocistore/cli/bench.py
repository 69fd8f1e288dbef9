"""``ocistore bench``: the disk-space tradeoff benchmark on the user's images."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ocistore.cli.args import add_json_flag
from ocistore.cli.context import Context, UsageError
from ocistore.cli.output import print_json

if TYPE_CHECKING:
    from ocistore.bench import BenchConfig

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench``."""
    p = sub.add_parser("bench", help="measure fetch / pull / discard / lazy on your images, beside containerd")
    add_arguments(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench's options (shared with ``python -m benches``)."""
    p.add_argument("sources", nargs="*", metavar="REF|ARCHIVE",
                   help="registry references and/or archives (OCI layout dir or tar, docker-archive)")
    p.add_argument("--images", nargs="+", default=[], metavar="NAME",
                   help="only these images of the archives (short names such as debian:gzip)")
    p.add_argument("--modes", nargs="+", default=["fetch", "pull", "discard", "lazy"],
                   help="modes to measure (default: fetch pull discard lazy)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per image and mode (default 3)")
    p.add_argument("--no-containerd", action="store_true", help="do not measure containerd")
    p.add_argument("--no-cli", action="store_true", help="do not time the steps as fresh CLI processes")
    p.add_argument("--loop-ext4", type=float, default=0.0, metavar="GB",
                   help="run both roots on a fresh loop-mounted ext4 of GB (needs root)")
    p.add_argument("--node", type=int, nargs="*", default=[1, 5, 20], metavar="N",
                   help="node model image counts (default 1 5 20; none: skip)")
    p.add_argument("--node-base", metavar="NAME", help="the node model's base image (default: the first)")
    p.add_argument("--settle", type=float, default=0.5, help="seconds of quiet before each timed step")
    p.add_argument("--plain-http", action="store_true", help="talk HTTP to the registries of REFs")
    p.add_argument("--work", default="/var/tmp/ocistore-bench", help="scratch directory (keep it short)")
    p.add_argument("--out", default="bench-out", help="where bench.json, bench.md and the PNGs go")
    p.add_argument("--readme", metavar="FILE",
                   help="also rewrite the generated section of FILE (between the ocistore bench markers)")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: render the report (markdown, plots, README section) from a bench.json")


def config_from(args: argparse.Namespace, command: str) -> BenchConfig:
    """A :class:`ocistore.bench.BenchConfig` from the parsed options."""
    from ocistore.bench import BenchConfig

    return BenchConfig(
        sources=tuple(args.sources), work=Path(args.work).absolute(), images=tuple(args.images),
        modes=tuple(args.modes), repeat=args.repeat, containerd=not args.no_containerd, cli=not args.no_cli,
        loop_ext4_gb=args.loop_ext4, settle=args.settle, plain_http=args.plain_http,
        node_counts=tuple(args.node), node_base=args.node_base, command=command)


def cmd_bench(ctx: Context, args: argparse.Namespace) -> int:
    """Run the bench; print where the report went (or the summary as JSON)."""
    from ocistore.bench import modes, report, runner
    from ocistore.transfer.progress import ProgressEvent

    if args.from_json:
        written = report.write(json.loads(Path(args.from_json).read_text()), Path(args.out),
                               Path(args.readme) if args.readme else None)
        ctx.out(f"rendered {written['markdown']} and {len(written['plots'])} plots from {args.from_json}")
        return 0
    if not args.sources:
        raise UsageError("give at least one image reference or archive")
    unknown = [m for m in args.modes if m not in modes.MODES]
    if unknown:
        raise UsageError(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(modes.MODES)}")
    printer = ctx.progress()

    def log(image: str, what: str, done: int, total: int) -> None:
        if printer is not None:
            printer(ProgressEvent(ref=image, digest="", kind="image", status=what, offset=done, total=total))

    command = "ocistore " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "ocistore bench"
    cfg = config_from(args, command)
    t0 = time.monotonic()
    try:
        results = runner.run(cfg, log)
    finally:
        if printer is not None:
            printer.close()
    written = report.write(results, Path(args.out), Path(args.readme) if args.readme else None)
    if ctx.json:
        print_json(ctx.stdout, {"json": str(written["json"]), "markdown": str(written["markdown"]),
                                "plots": [str(p) for p in written["plots"]],
                                "plots_skipped": written["plots_skipped"], "summary": written["summary"]})
        return 0
    ctx.out(f"bench done in {time.monotonic() - t0:.0f} s: {written['json']}, {written['markdown']}")
    for p in written["plots"]:
        ctx.out(f"plot: {p}")
    if written["plots_skipped"]:
        ctx.out(f"plots skipped: {written['plots_skipped']}")
    return 0
