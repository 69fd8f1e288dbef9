"""The ``ocistore`` command: global options, the verb groups, dispatch and exit codes.

Exit codes: 0 on success, 1 on a reported :class:`ocistore.errors.Error` (one line on
stderr, no traceback), 2 on usage errors. ``--debug`` lets the traceback through.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from ocistore import __version__, errors
from ocistore.cli.args import add_json_flag
from ocistore.cli.context import Context, UsageError

__all__ = ["COMMANDS", "build_parser", "default_root", "main", "parser_for"]

ROOT_ENV = "OCISTORE_ROOT"
NAMESPACE_ENV = "OCISTORE_NAMESPACE"
SYSTEM_ROOT = "/var/lib/ocistore"
Handler = Callable[[Context, argparse.Namespace], int]

# The verb modules, in the order of ``ocistore --help``, and the top-level commands (names and
# aliases) each registers. One call builds only its own command's parsers and imports only its
# module: the whole tree costs a fresh process more than the rest of its start-up.
GROUP_MODULES = ("content", "images", "snapshots", "containers", "leases", "namespaces", "maintenance", "serve",
                 "bench")
COMMANDS: dict[str, str] = {
    "content": "content",
    "images": "images", "image": "images", "i": "images",
    "snapshots": "snapshots", "snapshot": "snapshots",
    "containers": "containers", "container": "containers", "c": "containers",
    "leases": "leases", "lease": "leases",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "gc": "maintenance", "du": "maintenance", "check": "maintenance", "compile": "maintenance",
    "serve": "serve",
    "bench": "bench",
}


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
    return _parser(GROUP_MODULES)


def _global_options(parser: argparse.ArgumentParser, scan: bool = False) -> None:
    """The options before the command; ``scan`` makes ``--version`` a plain flag (prints nothing)."""
    parser.add_argument("--root", metavar="DIR",
                        help=f"store root (default: ${ROOT_ENV}, else {SYSTEM_ROOT} for root, "
                             "else ~/.local/share/ocistore)")
    parser.add_argument("--namespace", "-n", metavar="NS",
                        help=f"namespace (default: ${NAMESPACE_ENV}, else 'default')")
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if scan:
        parser.add_argument("-h", "--help", action="store_true")
        parser.add_argument("--version", action="store_true")
    else:
        parser.add_argument("--version", action="version", version=f"ocistore {__version__}")


def _parser(modules: Sequence[str]) -> argparse.ArgumentParser:
    """Global options and the commands the verb ``modules`` (of :data:`GROUP_MODULES`) register."""
    parser = argparse.ArgumentParser(
        prog="ocistore",
        description="An embeddable OCI image store: content, images, snapshots, leases and GC, ctr-like.",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(f"ocistore.cli.{name}").register(sub)
    _json_on_every_verb(parser)
    return parser


class _NotACommand(Exception):
    """The scan of an argument list met something that only the whole parser can report."""


class _ScanParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotACommand(message)


def _command_module(argv: Sequence[str]) -> str | None:
    """The verb module of the command ``argv`` names, as the whole parser reads it.

    The scan has the same global options (so abbreviations and option values resolve
    alike) and takes the command and what follows as the subparsers do (``A...``). None
    when the whole parser must answer: no command or an unknown one, a usage error before
    it, a top-level ``--help`` or ``--version``.
    """
    scan = _ScanParser(prog="ocistore", add_help=False)
    _global_options(scan, scan=True)
    scan.add_argument("command", nargs=argparse.PARSER)
    try:
        args = scan.parse_args(argv)
    except _NotACommand:
        return None
    if args.help:
        return None
    if args.version:
        return _VERSION_ONLY
    return COMMANDS.get(args.command[0])


_VERSION_ONLY = ""
"""What the scan gives for a ``--version`` that only needs the global options to answer."""


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """A parser that reads ``argv`` exactly as :func:`build_parser`'s does, built for its command only."""
    module = _command_module(argv)
    if module == _VERSION_ONLY:
        return _parser(())  # argparse answers --version as it meets it, before any command
    return build_parser() if module is None else _parser((module,))


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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = parser_for(argv)
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
