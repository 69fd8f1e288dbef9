"""How the command line prints: aligned tables, human sizes and ages, JSON, errors.

Nothing here knows about the store; the verb modules turn records into rows or JSON
objects and hand them to these helpers.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs

from ocistore import _time

__all__ = [
    "age",
    "format_labels",
    "human_duration",
    "human_size",
    "jsonable",
    "print_json",
    "print_table",
    "timestamp",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(n: int) -> str:
    """Bytes as ctr prints them: ``326.0 B``, ``28.9 MiB`` (binary units, one decimal)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    """An age the way docker's ``units.HumanDuration`` words it (``About a minute``, ``3 hours``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(s / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def age(t: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``t`` was, in words; ``-`` when unknown."""
    if t is None:
        return "-"
    now = now or datetime.now(UTC)
    return human_duration(max(0.0, (now - t).total_seconds()))


def timestamp(t: datetime | None) -> str | None:
    """RFC 3339 UTC text of ``t`` (``None`` stays ``None``)."""
    return None if t is None else _time.rfc3339(t)


def format_labels(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` sorted by key, or ``-`` when there are none (ctr's LABELS column)."""
    if not labels:
        return "-"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def print_table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Columns padded to their widest cell plus one space, as ctr's tabwriter does."""
    table = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write(" ".join(cells).rstrip() + "\n")


def jsonable(value: Any) -> Any:
    """``value`` made of JSON types: attrs records become objects, datetimes RFC 3339 text."""
    if isinstance(value, datetime):
        return _time.rfc3339(value)
    if isinstance(value, enum.Enum):
        return value.value
    to_json = getattr(value, "to_json", None)
    if callable(to_json) and attrs.has(type(value)):
        return to_json()
    if attrs.has(type(value)):
        return {f.name: jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def print_json(out: TextIO, value: Any) -> None:
    """``value`` as indented JSON on its own lines."""
    json.dump(jsonable(value), out, indent=2, sort_keys=False)
    out.write("\n")
