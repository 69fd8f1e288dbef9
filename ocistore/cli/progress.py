"""Progress display for long operations (fetch, pull, push, unpack, import), without dependencies.

On a terminal the status of every object is redrawn in place, one line per object, the
way ``ctr pull`` shows it; otherwise each change of status is printed once, as a plain
line a log file can keep. Like ctr, progress goes to stdout (errors alone go to stderr);
``--json`` turns it off so stdout holds only the JSON result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

from ocistore.cli.output import human_size
from ocistore.transfer.progress import ProgressEvent

__all__ = ["ProgressPrinter"]

_BAR = 30
_DONE = ("complete", "exists", "extracted")
_REDRAW_EVERY = 0.1  # seconds between redraws while only offsets change


def _short_ref(ref: str) -> str:
    """``layer-sha256:<64 hex>`` -> ``layer-sha256:<12 hex>``; other refs unchanged."""
    head, sep, tail = ref.rpartition("sha256:")
    if sep and len(tail) == 64 and all(c in "0123456789abcdef" for c in tail):
        return f"{head}{sep}{tail[:12]}"
    return ref


def _bar(offset: int, total: int) -> str:
    filled = _BAR if total <= 0 and offset > 0 else (offset * _BAR // total if total > 0 else 0)
    filled = min(_BAR, filled)
    return "|" + "+" * filled + "-" * (_BAR - filled) + "|"


class _Line:
    """What is known of one object."""

    __slots__ = ("offset", "status", "total")

    def __init__(self, status: str, offset: int, total: int) -> None:
        self.status = status
        self.offset = offset
        self.total = total


class ProgressPrinter:
    """A progress callback: give it to ``store.fetch(progress=...)`` and :meth:`close` it after.

    Thread-safe (events may come from download threads).
    """

    def __init__(self, out: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        """Print to ``out``; ``tty`` selects the redrawn display over plain lines."""
        self._out = out
        self._tty = tty
        self._clock = clock
        self._start = clock()
        self._lines: dict[str, _Line] = {}
        self._downloaded: dict[str, int] = {}
        self._verb = "downloaded"
        self._drawn = 0
        self._last_draw = 0.0
        self._lock = threading.Lock()

    @property
    def tty(self) -> bool:
        """Whether this printer redraws in place on a terminal."""
        return self._tty

    def __call__(self, event: ProgressEvent) -> None:
        """Record one event and show it."""
        with self._lock:
            line = self._lines.get(event.ref)
            changed = line is None or line.status != event.status
            if line is None:
                line = self._lines[event.ref] = _Line(event.status, event.offset, event.total)
            line.status, line.offset, line.total = event.status, event.offset, event.total
            if event.status in ("downloading", "uploading"):
                self._downloaded[event.ref] = event.offset
                self._verb = "uploaded" if event.status == "uploading" else "downloaded"
            elif event.status == "complete":
                self._downloaded[event.ref] = event.total
            if self._tty:
                now = self._clock()
                if changed or now - self._last_draw >= _REDRAW_EVERY:
                    self._redraw(now)
            elif changed:
                self._out.write(self._plain(event) + "\n")
                self._out.flush()

    def close(self) -> None:
        """Draw the final state (on a terminal) with the elapsed time."""
        with self._lock:
            if self._tty and self._lines:
                self._redraw(self._clock())

    @staticmethod
    def _plain(event: ProgressEvent) -> str:
        text = f"{event.ref}: {event.status}"
        if event.status in _DONE and event.total:
            text += f" {human_size(event.total)}"
        return text

    def _render(self, ref: str, line: _Line, width: int) -> str:
        bar = _bar(1, 1) if line.status in _DONE else _bar(line.offset, line.total)
        text = f"{_short_ref(ref)}: {line.status:<11} {bar}"
        if line.status in ("downloading", "uploading") and line.total:
            text += f" {human_size(line.offset)}/{human_size(line.total)}"
        return text[: max(1, width - 1)]

    def _summary(self, now: float, width: int) -> str:
        elapsed = now - self._start
        done = sum(self._downloaded.values())
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"elapsed: {elapsed:.1f} s  {self._verb}: {human_size(done)} ({human_size(int(rate))}/s)"
        return text[: max(1, width - 1)]

    def _redraw(self, now: float) -> None:
        import shutil  # (and bz2, lzma): only a terminal's progress needs it

        width = shutil.get_terminal_size((100, 24)).columns
        rows = [self._render(ref, line, width) for ref, line in self._lines.items()]
        rows.append(self._summary(now, width))
        buf = f"\x1b[{self._drawn}A" if self._drawn else ""
        buf += "".join(f"\r\x1b[K{row}\n" for row in rows)
        self._out.write(buf)
        self._out.flush()
        self._drawn = len(rows)
        self._last_draw = now
