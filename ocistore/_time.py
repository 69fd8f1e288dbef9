"""UTC timestamps and their RFC 3339 text form (as containerd labels carry them)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_ns", "now", "parse_rfc3339", "rfc3339", "to_ns"]


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    """``2026-11-22T14:44:11.123456Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset; up to nanosecond digits). ValueError if bad."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits: cut nanoseconds.
    if "." in s:
        head, _, rest = s.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        s = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    t = datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def to_ns(t: datetime) -> int:
    """Nanoseconds since the epoch (microsecond precision)."""
    delta = t.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    """Inverse of :func:`to_ns`."""
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, tz=UTC)
