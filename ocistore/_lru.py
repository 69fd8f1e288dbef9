"""A small thread-safe least-recently-used map, for the in-process caches of parsed and
opened things (eStargz TOCs, merged trees, open lazy images)."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``size`` entries; a hit becomes the most recent, a put beyond the size drops
    the least recently used (nothing is closed: what a caller still holds stays usable)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value of ``key``, now the most recently used; None when absent."""
        with self._lock:
            hit = self._items.pop(key, None)
            if hit is not None:
                self._items[key] = hit
            return hit

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` as the most recently used entry."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = value
            while len(self._items) > self._size:
                del self._items[next(iter(self._items))]

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, or None."""
        with self._lock:
            return self._items.pop(key, None)

    def drain(self) -> list[V]:
        """Forget every entry; their values, least recently used first."""
        with self._lock:
            values, self._items = list(self._items.values()), {}
        return values
