"""The ``ocistore`` command: global options, the verb groups, dispatch and exit codes.

Exit codes: 0 on success, 1 on a reported :class:`ocistore.errors.Error` (one line on
stderr, no traceback), 2 on usage errors. ``--debug`` lets the traceback through.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ocistore import __version__, errors
from ocistore.cli import bench, containers, content, images, leases, maintenance, namespaces, serve, snapshots
from ocistore.cli.args import add_json_flag
from ocistore.cli.context import Context, UsageError

__all__ = ["build_parser", "default_root", "main"]

ROOT_ENV = "OCISTORE_ROOT"
NAMESPACE_ENV = "OCISTORE_NAMESPACE"
SYSTEM_ROOT = "/var/lib/ocistore"
Handler = Callable[[Context, argparse.Namespace], int]


def default_root(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``$OCISTORE_ROOT``, else ``/var/lib/ocistore`` for root, else the user's data directory."""
    env = os.environ if env is None else env
    if env.get(ROOT_ENV):
        return Path(env[ROOT_ENV])
    if (os.geteuid() if euid is None else euid) == 0:
        return Path(SYSTEM_ROOT)
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(data) / "ocistore"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options and every verb group."""
    parser = argparse.ArgumentParser(
        prog="ocistore",
        description="An embeddable OCI image store: content, images, snapshots, leases and GC, ctr-like.",
    )
    parser.add_argument("--root", metavar="DIR",
                        help=f"store root (default: ${ROOT_ENV}, else {SYSTEM_ROOT} for root, "
                             "else ~/.local/share/ocistore)")
    parser.add_argument("--namespace", "-n", metavar="NS",
                        help=f"namespace (default: ${NAMESPACE_ENV}, else 'default')")
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"ocistore {__version__}")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for module in (content, images, snapshots, containers, leases, namespaces, maintenance, serve, bench):
        module.register(sub)
    _json_on_every_verb(parser)
    return parser


def _json_on_every_verb(parser: argparse.ArgumentParser) -> None:
    """Accept ``--json`` after any verb too (``ocistore snapshots ls --json``), as before it."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        if "--json" not in parser._option_string_actions:
            add_json_flag(parser)
        return
    for action in subparsers:
        for child in set(action.choices.values()):  # aliases map to the same parser
            _json_on_every_verb(child)


def _context(args: argparse.Namespace, stdout: TextIO | None, stderr: TextIO | None,
             stdin: TextIO | None) -> Context:
    root = Path(args.root) if args.root else default_root()
    namespace = args.namespace or os.environ.get(NAMESPACE_ENV) or "default"
    return Context(root, namespace, json=args.json, stdout=stdout, stderr=stderr, stdin=stdin)


def _run(parser: argparse.ArgumentParser, ctx: Context, args: argparse.Namespace) -> int:
    handler: Handler = args.func
    try:
        return handler(ctx, args)
    except UsageError as err:
        parser.print_usage(ctx.stderr)
        ctx.stderr.write(f"ocistore: error: {err}\n")
        return 2
    except errors.Error as err:
        if args.debug:
            raise
        ctx.report(err)
        return 1
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as err:
        if args.debug:
            raise
        ctx.report(err)
        return 1
    except KeyboardInterrupt:
        ctx.stderr.write("ocistore: interrupted\n")
        return 130


def _silence_stdout() -> None:
    """After the reader of a pipe went away: stop Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    """Run one command line; returns the exit code (``ocistore.cli:main`` is the console script)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    ctx = _context(args, stdout, stderr, stdin)
    try:
        return _run(parser, ctx, args)
    finally:
        try:
            ctx.close()
        except errors.Error as err:
            ctx.report(err)
