"""The garbage collector's mark algorithm: pure graph code, no I/O (containerd ``pkg/gc``).

A node is a ``(type, namespace, key)`` tuple. Types are small integers; bits above
:data:`TYPE_MASK` are free for the caller's policy (the metadata GC uses :data:`FLAT` to
say "keep this object but do not follow its references"). The mark phase records
reachable nodes with those bits stripped, so a node reached both flat and non-flat is
one reachable object, while both variants are still expanded (a flat visit must not
hide the references of a non-flat one).

The policy -- which nodes are roots and what a node references -- lives in
:mod:`ocistore.metadata.gc`; this module only walks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = [
    "CONTAINER",
    "CONTENT",
    "FLAT",
    "IMAGE",
    "INGEST",
    "LEASE",
    "SNAPSHOT",
    "TYPE_MASK",
    "TYPE_NAMES",
    "Node",
    "sweep",
    "tricolor",
]

CONTENT = 1
SNAPSHOT = 2
CONTAINER = 3
IMAGE = 5
LEASE = 6
INGEST = 7

TYPE_MASK = 0x1F
"""Bits of a node type that name the resource; higher bits are policy flags."""
FLAT = 0x20
"""Policy flag: the object is kept but its references are not followed."""

TYPE_NAMES = {
    CONTENT: "content",
    SNAPSHOT: "snapshot",
    CONTAINER: "container",
    IMAGE: "image",
    LEASE: "lease",
    INGEST: "ingest",
}


Node = tuple[int, str, str]
"""One object of the graph: ``(type, namespace, key)``. Snapshot keys are
``"<snapshotter>/<key>"``. Plain tuples (not a class) keep marking 100k nodes cheap."""


def tricolor(roots: Iterable[Node], refs: Callable[[Node], Iterable[Node]]) -> set[Node]:
    """Every node reachable from ``roots`` (roots included), flag bits stripped.

    Single-threaded tri-colour marking with an explicit grey stack (depth first): white
    nodes are unseen, grey nodes are on the stack, black nodes are in the result. Memory
    is proportional to the reachable set. ``refs`` may name nodes that do not exist
    (dangling references are allowed); it is called once per distinct (flagged) node.
    """
    seen: set[Node] = set()
    grey: list[Node] = []
    for root in roots:
        if root not in seen:
            seen.add(root)
            grey.append(root)
    black: set[Node] = set()
    while grey:
        node = grey.pop()
        for target in refs(node):
            if target not in seen:
                seen.add(target)
                grey.append(target)
        if node[0] & ~TYPE_MASK:
            node = (node[0] & TYPE_MASK, node[1], node[2])
        black.add(node)
    return black


def sweep(reachable: set[Node], nodes: Iterable[Node]) -> list[Node]:
    """The nodes of ``nodes`` that are not reachable (white), in the order given."""
    return [n for n in nodes if n not in reachable]
