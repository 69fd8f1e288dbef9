"""Named fault points for crash-consistency testing (the torture harness, ``tests/torture/``).

A fault point marks an instruction where a crash is interesting: after an ingest write,
before a blob is linked under its digest, inside an LMDB write transaction before it
commits, before a snapshot directory is renamed in place, between the last snapshot commit
of an unpack and the config's gc label update. Product code calls::

    _faults.fault_point("content.commit.link")

It does nothing unless the environment variable ``OCISTORE_FAULT=<name>[:<n>]`` was set when
this module was first imported; then the ``n``-th hit (default 1) of the point ``name`` in
this process sends SIGKILL to the process itself: no ``finally`` block, no ``atexit``, no
buffered write runs, as with a power cut of the process. With the variable unset,
``fault_point`` is a function that returns at once (one call, no lookup, no lock).

The names (:data:`POINTS`) are part of the test contract; :data:`POINTS` lists every one
placed in the product.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ocistore._lazy import lazy_module

if TYPE_CHECKING:
    import signal
else:
    signal = lazy_module("signal")  # its enums cost a fresh process; only a fired fault needs it

__all__ = ["ENV", "POINTS", "armed", "fault_point"]

ENV = "OCISTORE_FAULT"

POINTS = (
    "content.ingest.write",      # content/local.py: after bytes of an ingest were written
    "content.commit.link",       # content/local.py: verified, before the blob's link under its digest
    "metadata.txn.commit",       # metadata/db.py: inside a write transaction, before it commits
    "snapshots.rename",          # snapshots/base.py: before a new snapshot's directory is renamed in place
    "unpack.label",              # transfer/unpack.py: chain committed, before the config's gc.ref.snapshot label
    "dedup.link",                # archive/_dedup.py: a file's link made under a temp name, before it replaces the file
)


def _parse(value: str) -> tuple[str, int]:
    name, _, count = value.partition(":")
    try:
        n = int(count) if count else 1
    except ValueError:
        n = 1
    return name, max(n, 1)


def _noop(name: str) -> None:
    """Fault points are off: nothing to do."""


_spec = os.environ.get(ENV, "")
_target, _nth = _parse(_spec) if _spec else ("", 0)
_hits = 0
_lock = threading.Lock()


def _armed(name: str) -> None:
    """Count hits of the armed point; SIGKILL this process on the ``n``-th."""
    global _hits
    if name != _target:
        return
    with _lock:
        _hits += 1
        if _hits < _nth:
            return
    os.kill(os.getpid(), signal.SIGKILL)


fault_point = _armed if _spec else _noop
"""``fault_point(name)``: crash here if ``OCISTORE_FAULT`` names this point (see the module doc)."""


def armed() -> str:
    """The armed point's name, or ``""`` when fault points are off."""
    return _target
