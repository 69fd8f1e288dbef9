"""The merged file tree of an image's eStargz layers, built from their TOCs alone (no I/O).

:func:`merge_tocs` replays the TOC entries of the layers, bottom to top, the way the overlay
unpack applies the tar members (``ocistore.archive``): a later entry replaces a non-directory
and merges into a directory; ``.wh.<name>`` hides what the lower layers hold at ``<name>``
(what the same layer wrote stays, a directory it wrote becomes opaque); ``.wh..wh..opq``
hides the lower contents of its directory; other ``.wh..wh.*`` names are AUFS bookkeeping
and ignored; parent directories that no entry lists are implied (``0755``, owned by root);
a parent path is resolved through the symlinks of the tree built so far, clamped to the
root (an absolute target restarts at the root, ``..`` stops at it, at most ``MAX_LINKS``
links); a hard link shares its target's :class:`Node`. The eStargz bookkeeping entries
(``stargz.index.json``, the landmark files) are hidden as the checked unpack hides them.

Each regular file keeps the chunks of the layer its data comes from (``Node.layer``), so a
reader asks that layer's :class:`~ocistore.estargz.source.LayerSource` for them.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import os
import stat
from collections.abc import Iterator, Sequence

import attrs

from ocistore import errors
from ocistore.estargz.toc import TOC, Chunk, TOCEntry, clean_name
from ocistore.estargz.writer import NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK
from ocistore.oci.paths import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, whiteout_target

__all__ = ["MAX_LINKS", "ROOT_INO", "MergedTree", "Node", "merge_tocs", "parse_modtime", "prioritized_chunks"]

MAX_LINKS = 255
"""Symlinks followed while resolving one path (as the unpack's resolver and containerd's RootPath)."""
ROOT_INO = 1
_HIDDEN = frozenset({PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK})
_S_IFMT = {
    "dir": stat.S_IFDIR, "reg": stat.S_IFREG, "symlink": stat.S_IFLNK, "char": stat.S_IFCHR,
    "block": stat.S_IFBLK, "fifo": stat.S_IFIFO,
}


@functools.lru_cache(maxsize=4096)  # the files of a layer share few distinct times
def parse_modtime(text: str) -> int:
    """A TOC ``modtime`` (RFC 3339, stargz writes whole seconds in UTC) as nanoseconds; 0 if empty or bad."""
    if not text:
        return 0
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@attrs.define(eq=False, slots=True)
class Node:
    """One inode of the merged tree (hard links share one)."""

    ino: int
    type: str  # dir, reg, symlink, char, block, fifo
    mode: int = 0o755  # permission bits with setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    link_name: str = ""
    dev_major: int = 0
    dev_minor: int = 0
    xattrs: dict[str, bytes] = attrs.Factory(dict)
    layer: int = -1  # index (bottom = 0) of the layer whose chunks hold the data
    chunks: tuple[Chunk, ...] = ()
    children: dict[str, Node] | None = None  # directories only, name -> node
    nlink: int = 1
    _starts: list[int] | None = attrs.field(default=None, init=False, repr=False)

    def chunk_span(self, offset: int, end: int) -> range:
        """The indices of the chunks holding bytes ``[offset, end)`` of a regular file (found by
        bisection: a large file has thousands of chunks, and readers come 128 KiB at a time)."""
        starts = self._starts
        if starts is None:
            starts = self._starts = [c.start for c in self.chunks]
        end = min(end, self.size)
        if offset >= end:
            return range(0)
        return range(max(0, bisect.bisect_right(starts, offset) - 1), bisect.bisect_left(starts, end))

    @property
    def st_mode(self) -> int:
        """``st_mode`` as ``stat`` reports it (file type bits and permissions)."""
        return _S_IFMT[self.type] | (self.mode & 0o7777)

    @property
    def rdev(self) -> int:
        """The device number of a character or block device (0 otherwise)."""
        return os.makedev(self.dev_major, self.dev_minor) if self.type in ("char", "block") else 0

    @property
    def is_dir(self) -> bool:
        """Whether the node is a directory."""
        return self.type == "dir"


class MergedTree:
    """The merged view of an image's layers: lookups by path or inode number, listings."""

    def __init__(self, root: Node, layers: int) -> None:
        self.root = root
        self.layers = layers
        self._inodes: dict[int, Node] = {}
        for _path, node in self.walk():
            self._inodes[node.ino] = node

    def node(self, ino: int) -> Node:
        """The node with inode number ``ino``; NotFound if there is none."""
        try:
            return self._inodes[ino]
        except KeyError:
            raise errors.NotFound(f"no inode {ino} in the merged tree") from None

    def lookup(self, path: str, *, follow: bool = True) -> Node:
        """The node at ``path`` (relative or absolute, resolved inside the root).

        Symlinks on the way are followed, clamped to the root; the last one too when
        ``follow``. NotFound for a missing path, InvalidArgument when a component that must
        be a directory is not one, UnsafeArchive beyond ``MAX_LINKS`` links.
        """
        stack = _walk(self.root, path.split("/"), follow_last=follow, what=path)
        if not stack:
            return self.root
        node = stack[-1][1]
        if node is None:
            raise errors.NotFound(f"{path!r}: no such file or directory in the image")
        return node

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path``, sorted; InvalidArgument if it is no directory."""
        node = self.lookup(path)
        if node.children is None:
            raise errors.InvalidArgument(f"{path!r} is not a directory")
        return sorted(node.children)

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every path and its node, parents before children, names sorted (the root is ``""``)."""
        pending: list[tuple[str, Node]] = [("", self.root)]
        while pending:
            path, node = pending.pop()
            yield path, node
            if node.children:
                prefix = f"{path}/" if path else ""
                pending.extend((prefix + name, child) for name, child in sorted(node.children.items(), reverse=True))

    def regular_files(self) -> Iterator[tuple[str, Node]]:
        """Every regular file's path (one per name, so a hard-linked inode shows several times)."""
        return ((p, n) for p, n in self.walk() if n.type == "reg")


def _walk(root: Node, parts: Sequence[str], *, follow_last: bool, what: str) -> list[tuple[str, Node | None]]:
    """Resolve ``parts`` component by component (containerd's RootPath): the stack of
    ``(name, node or None if missing)``; a missing component is kept lexically, so that a
    later ``..`` drops it again."""
    stack: list[tuple[str, Node | None]] = []
    pending = list(reversed(parts))
    links = 0
    while pending:
        comp = pending.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if stack:
                stack.pop()
            continue
        parent = stack[-1][1] if stack else root
        node = None
        if parent is not None:
            if parent.children is None:
                raise errors.InvalidArgument(f"{what!r}: {'/'.join(n for n, _ in stack)!r} is not a directory")
            node = parent.children.get(comp)
        if node is not None and node.type == "symlink" and (pending or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise errors.UnsafeArchive(f"{what!r}: too many levels of symbolic links")
            if node.link_name.startswith("/"):
                stack = []
            pending.extend(reversed(node.link_name.split("/")))
            continue
        stack.append((comp, node))
    return stack


class _Builder:
    """Replays the layers' entries onto one tree (see the module docstring)."""

    def __init__(self) -> None:
        self._next_ino = ROOT_INO
        self.root = self._new("dir", children={})
        self._upper: set[int] = set()  # inodes the current layer wrote (they are in its upper dir)
        self._layer = 0
        # the last member's parent directory, resolved: members come in tar order, most beside the
        # one before. Forgotten when a directory or symlink leaves the tree (paths may resolve
        # differently then); a node added where none was cannot change a path that resolved.
        self._last_parent: tuple[str, Node] | None = None

    def _new(self, kind: str, **fields: object) -> Node:
        node = Node(self._next_ino, kind, **fields)  # type: ignore[arg-type]
        self._next_ino += 1
        return node

    def layer(self, index: int, toc: TOC) -> None:
        self._layer = index
        self._upper = {self.root.ino}
        self._last_parent = None
        for entry, chunks in toc.files():
            self._entry(entry, chunks)

    def _entry(self, entry: TOCEntry, chunks: list[Chunk]) -> None:
        name = clean_name(entry.name)
        if not name:
            return  # the root itself: left as it is, as the unpack does
        if name in _HIDDEN and entry.type == "reg":
            return
        dirname, _, base = name.rpartition("/")
        last = self._last_parent
        if last is not None and last[0] == dirname:
            parent = last[1]
        else:
            parent = self._parent(dirname.split("/") if dirname else [], entry.name)
            self._last_parent = (dirname, parent)
        assert parent.children is not None
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base, entry.name)
            return
        existing = parent.children.get(base)
        if entry.type == "dir":
            if existing is None or not existing.is_dir:
                self._remove(parent, base)
                existing = parent.children[base] = self._new("dir", children={})
            self._attributes(existing, entry)
            self._upper.add(existing.ino)
            return
        if entry.type == "hardlink":
            self._hardlink(parent, base, entry)
            return
        self._remove(parent, base)
        node = self._new(entry.type)
        self._attributes(node, entry)
        if entry.type == "reg":
            node.size = entry.size
            node.layer = self._layer
            node.chunks = tuple(chunks)
        elif entry.type == "symlink":
            node.link_name = entry.link_name
            node.size = len(entry.link_name.encode("utf-8", "surrogateescape"))
        elif entry.type in ("char", "block"):
            node.dev_major, node.dev_minor = entry.dev_major, entry.dev_minor
        parent.children[base] = node
        self._upper.add(node.ino)

    def _attributes(self, node: Node, entry: TOCEntry) -> None:
        node.mode = entry.mode & 0o7777
        node.uid, node.gid = entry.uid, entry.gid
        node.mtime_ns = parse_modtime(entry.modtime)
        # trusted.* is never applied; user.* only on regular files and directories (as the unpack)
        node.xattrs = {
            k: v for k, v in (entry.xattrs or {}).items()
            if not k.startswith("trusted.") and (entry.type in ("reg", "dir") or not k.startswith("user."))
        }

    def _parent(self, parts: list[str], member: str) -> Node:
        """The directory holding a member, created (in the current layer) where missing."""
        stack = _walk(self.root, parts, follow_last=True, what=member)
        node = self.root
        for comp, found in stack:
            if found is not None and not found.is_dir:
                raise errors.InvalidArgument(f"member {member!r}: {comp!r} is not a directory")
            child = found
            if child is None:
                assert node.children is not None
                child = node.children[comp] = self._new("dir", children={})
            self._upper.add(child.ino)
            node = child
        return node

    def _remove(self, parent: Node, name: str) -> None:
        assert parent.children is not None
        old = parent.children.pop(name, None)
        if old is not None:
            old.nlink -= 1
            if old.type in ("dir", "symlink"):
                self._last_parent = None

    def _whiteout(self, parent: Node, base: str, member: str) -> None:
        name = whiteout_target(base, member)
        if name is None:
            return  # other AUFS metadata (.wh..wh.plnk, ...): never part of the file system
        if name == WHITEOUT_OPAQUE:
            self._opaque(parent)
            return
        assert parent.children is not None
        node = parent.children.get(name)
        if node is not None and node.ino in self._upper:
            if node.is_dir:
                self._opaque(node)  # written by this layer: it stays, without the lower contents
            return
        self._remove(parent, name)

    def _opaque(self, directory: Node) -> None:
        assert directory.children is not None
        for name in [n for n, child in directory.children.items() if child.ino not in self._upper]:
            self._remove(directory, name)

    def _hardlink(self, parent: Node, base: str, entry: TOCEntry) -> None:
        target_parts = clean_name(entry.link_name, f"hard link target of {entry.name!r}").split("/")
        if target_parts == [""]:
            raise errors.UnsafeArchive(f"member {entry.name!r}: hard link to the root directory")
        stack = _walk(self.root, target_parts, follow_last=False, what=entry.name)
        target = stack[-1][1] if stack else self.root
        if target is None or target.ino not in self._upper:
            raise errors.UnsafeArchive(
                f"member {entry.name!r}: hard link target {entry.link_name!r} is not extracted in this layer"
            )
        if target.is_dir:
            raise errors.UnsafeArchive(f"member {entry.name!r}: hard link to directory {entry.link_name!r}")
        assert parent.children is not None
        if parent.children.get(base) is target:
            return
        self._remove(parent, base)
        parent.children[base] = target
        target.nlink += 1


def merge_tocs(tocs: Sequence[TOC]) -> MergedTree:
    """The merged tree of layers whose TOCs are ``tocs``, bottom to top."""
    builder = _Builder()
    for index, toc in enumerate(tocs):
        builder.layer(index, toc)
    return MergedTree(builder.root, len(tocs))


def prioritized_chunks(toc: TOC) -> list[Chunk]:
    """The chunks of the files a ``.prefetch.landmark`` marks as prioritized (the entries
    before it, as stargz-snapshotter reads them); empty without that landmark."""
    if toc.landmark() != PREFETCH_LANDMARK:
        return []
    out: list[Chunk] = []
    for entry, chunks in toc.files():
        if entry.type == "reg" and clean_name(entry.name) == PREFETCH_LANDMARK:
            return out
        out.extend(chunks)
    return out
