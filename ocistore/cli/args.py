"""Parsing argument values shared by several verbs: labels, durations, multi-object loops."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from ocistore import errors
from ocistore.cli.context import Context, UsageError

if TYPE_CHECKING:
    from ocistore.cli.progress import ProgressPrinter

__all__ = [
    "add_json_flag", "add_platform_argument", "add_snapshotter_argument", "for_each", "parse_duration",
    "parse_labels", "parse_size", "progress_of", "size_arg",
]

_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """A verb-level ``--json`` (the same as the global one; absent means "keep the global value")."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")


def add_platform_argument(p: argparse.ArgumentParser) -> None:
    """``--platform OS/ARCH[/VARIANT]`` (default: the host's)."""
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="platform (default: this host's)")


def add_snapshotter_argument(p: argparse.ArgumentParser) -> None:
    """``--snapshotter NAME`` (default: overlayfs)."""
    p.add_argument("--snapshotter", default="overlayfs", help="snapshotter (default: overlayfs)")


@contextmanager
def progress_of(ctx: Context, terminal_only: bool = False) -> Iterator[ProgressPrinter | None]:
    """A progress printer for one operation, closed (final frame drawn) afterwards.

    ``terminal_only`` shows progress on a terminal and nothing otherwise (for verbs whose
    stdout scripts read, such as ``containers create``); then the printer's modules are not
    even loaded when stdout is not a terminal.
    """
    isatty = getattr(ctx.stdout, "isatty", None)
    printer = None if terminal_only and not (isatty and isatty()) else ctx.progress()
    try:
        yield printer
    finally:
        if printer is not None:
            printer.close()


def parse_labels(items: Iterable[str], allow_empty: bool = True) -> dict[str, str]:
    """``["a=1", "b="]`` -> ``{"a": "1", "b": ""}``; an item without ``=`` is a usage error."""
    labels: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"label {item!r} is not of the form KEY=VALUE")
        if not v and not allow_empty:
            raise UsageError(f"label {k!r} needs a value")
        labels[k] = v
    return labels


def parse_duration(text: str) -> timedelta | None:
    """A Go-style duration (``24h``, ``1h30m``, ``90s``, ``2d``); ``0`` means none."""
    s = text.strip()
    if s in ("0", ""):
        return None
    pos = 0
    seconds = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise UsageError(f"invalid duration {text!r}: use a number and a unit, such as 24h, 90m or 1h30m")
    return timedelta(seconds=seconds)


def for_each(ctx: Context, items: Iterable[str], action: Callable[[str], None]) -> int:
    """Run ``action`` on each item; report each failure on its own line and go on.

    Returns 0 when all succeeded, 1 otherwise (as ``ctr ... rm A B C`` does).
    """
    status = 0
    for item in items:
        try:
            action(item)
        except errors.Error as err:
            ctx.report(err, item)
            status = 1
    return status


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"500M"``, ``"1GiB"``, ``"1.5g"`` or plain bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"invalid size {text!r}: use bytes or a number with K, M, G or T")
    return int(float(m.group(1)) * _FACTOR[m.group(2).lower()])


def size_arg(text: str) -> int:
    """:func:`parse_size` as an argparse ``type`` (a bad value is a usage error)."""
    try:
        return parse_size(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
