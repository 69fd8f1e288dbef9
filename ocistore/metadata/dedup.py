"""The file-dedup index: fingerprint keys of committed files -> where they are.

Two tables (keys are text, ``\\0`` between parts)::

    dedup_files      <key>\\0<snapshotter>\\0<snapshot id>  -> "<path relative to the snapshot's fs>"
    dedup_snapshots  <snapshotter>\\0<snapshot id>\\0<key>  -> ""   (the same entries, by snapshot)

``<key>`` is ``archive._dedup.fingerprint_key`` (content fingerprint, size and inode
metadata). Snapshot ids are unique per snapshotter across namespaces (one sequence), so an
entry needs no namespace. Entries are added for a committed snapshot only, once per key and
snapshot, after its commit (:func:`add`, in a transaction that checks the snapshot is still
committed), and dropped in the transaction that removes the snapshot's record (snapshotter
``remove``, gc's sweep, eviction through ``remove``): the index never names a file whose
snapshot record is gone. An ocistore without dedup that removes a snapshot leaves its entries
behind; those name paths that no longer exist, are skipped by lookups (every candidate is
opened and compared before a link) and are reported and removed by ``check``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ocistore.metadata.db import Txn, key, prefix, split_key

__all__ = ["BY_SNAPSHOT", "FILES", "add", "candidates", "drop", "entries"]

FILES = "dedup_files"
BY_SNAPSHOT = "dedup_snapshots"


def add(txn: Txn, snapshotter: str, sid: int, files: Iterable[tuple[str, str]]) -> int:
    """Index ``(key, relative path)`` pairs of snapshot ``sid``; the first path per key wins.

    Returns how many entries were added.
    """
    added = 0
    sid_s = str(sid)
    for fkey, rel in files:
        k = key(fkey, snapshotter, sid_s)
        if txn.has(FILES, k):
            continue
        txn.put(FILES, k, rel)
        txn.put(BY_SNAPSHOT, key(snapshotter, sid_s, fkey), "")
        added += 1
    return added


def drop(txn: Txn, snapshotter: str, sid: int | str) -> int:
    """Remove every entry of snapshot ``sid``; returns how many there were."""
    pfx = prefix(snapshotter, str(sid))
    ks = txn.keys(BY_SNAPSHOT, pfx)
    for k in ks:
        fkey = k[len(pfx):].decode()
        txn.delete(FILES, key(fkey, snapshotter, str(sid)))
        txn.delete(BY_SNAPSHOT, k)
    return len(ks)


def candidates(txn: Txn, fkey: str, limit: int = 8) -> list[tuple[str, int, str]]:
    """``(snapshotter, snapshot id, relative path)`` of up to ``limit`` files indexed under ``fkey``."""
    out: list[tuple[str, int, str]] = []
    pfx = prefix(fkey)
    for k, rel in txn.scan(FILES, pfx):
        snapshotter, sid = k[len(pfx):].decode().split("\x00", 1)
        out.append((snapshotter, int(sid), str(rel)))
        if len(out) >= limit:
            break
    return out


def entries(txn: Txn) -> Iterator[tuple[str, str, int, str]]:
    """Every ``(key, snapshotter, snapshot id, relative path)`` of the index."""
    for k, rel in txn.scan(FILES):
        fkey, snapshotter, sid = split_key(k)
        yield fkey, snapshotter, int(sid), str(rel)


def reverse_entries(txn: Txn) -> Iterator[tuple[str, int, str]]:
    """Every ``(snapshotter, snapshot id, key)`` of the by-snapshot table."""
    for k in txn.keys(BY_SNAPSHOT):
        snapshotter, sid, fkey = split_key(k)
        yield snapshotter, int(sid), fkey
