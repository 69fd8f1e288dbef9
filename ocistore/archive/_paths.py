"""Member names and their resolution inside the root, never outside it.

Names are cleaned lexically (absolute names are re-rooted, ``..`` that climbs
above the root is refused). Parent directories are then resolved component by
component in the *merged view* of the layers being applied onto: the root (the
writable upper dir) first, then each lower dir (overlay mode, nearest first),
respecting whiteouts and opaque directories the way overlayfs merges them.
Symlinks met on the way are followed, but clamped to the root; the result is a
path of real directories in the root, so the final component can be operated on
with no-follow semantics.

Nothing but this module's caller writes into the root while a layer is applied
(as for containerd's applier); the resolution cache relies on that and is
invalidated by the caller whenever it removes or replaces directories.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ocistore import errors
from ocistore.oci.paths import clean_member_name

__all__ = ["MAX_LINKS", "Resolver", "clean_name", "is_whiteout_device"]

MAX_LINKS = 255  # symlinks followed while resolving one path, as containerd's RootPath
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")

CreateHook = Callable[[str, "str | None", bool], None]
"""Called with (real path, lower template dir or None, opaque) after a parent dir is created."""


def clean_name(name: str, what: str = "member") -> list[str]:
    """The components of a member name, cleaned (see :func:`ocistore.oci.paths.clean_member_name`)."""
    return clean_member_name(name, what)


def is_whiteout_device(st: os.stat_result) -> bool:
    """An overlayfs whiteout: a character device 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for attr in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _lstat(path: str, dir_fd: int | None = None) -> os.stat_result | None:
    try:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


class Resolver:
    """Resolves member parents to real directory paths relative to the root.

    ``layers[0]`` is the root being written; ``layers[1:]`` are read-only lower
    dirs (overlay mode). Resolved paths are ``""`` for the root or ``"a/b"``.
    """

    def __init__(self, layers: list[str], overlay: bool, on_create: CreateHook) -> None:
        self.layers = layers
        self.overlay = overlay
        self.root = layers[0]
        self._all = tuple(range(len(layers)))
        # real path -> indices of the layers whose directory makes up the merged dir
        self._dirs: dict[str, tuple[int, ...]] = {"": self._all}
        self._aliases: dict[str, str] = {"": ""}  # cleaned parent name -> real path
        self._on_create = on_create
        self.root_fd = -1  # a descriptor of the root, when the caller has one: lookups relative to it

    def invalidate(self) -> None:
        """Forget every cached resolution (after removals, whiteouts, opaque changes)."""
        self._dirs = {"": self._all}
        self._aliases = {"": ""}

    def is_cached_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory the cache relies on."""
        return rel in self._dirs

    def note_upper_dir(self, rel: str) -> None:
        """``rel`` was just created as a directory in the root (merging with lower ones)."""
        layers = self._dirs.get(rel)
        if layers is not None and 0 not in layers:
            self.invalidate()

    def note_dir(self, rel: str) -> None:
        """``rel`` is a real directory of the root now (the caller made sure of it).

        With no lower dirs that is all the merged view holds there: cached, so that the
        members below it do not look it up again.
        """
        if len(self.layers) == 1:
            self._dirs[rel] = self._all

    def parent(self, parts: list[str], member: str, create: bool = True) -> str | None:
        """Real path of the directory holding the member whose cleaned components are ``parts``.

        Missing directories are created when ``create`` is true (copying the
        attributes of a lower directory when one exists); otherwise None is
        returned for a parent that does not exist.
        """
        key = "/".join(parts[:-1])
        real = self._aliases.get(key)
        if real is not None and (not create or 0 in self._dirs.get(real, ())):
            return real
        real = self._resolve(parts[:-1], member, create)
        if real is not None and create:
            self._aliases[key] = real
        return real

    def _resolve(self, parts: list[str], member: str, create: bool) -> str | None:
        # Walk the components in the merged view without changing anything: a missing
        # component is kept lexically (a later ".." may drop it again), as containerd's
        # RootPath does. Directories are created (or copied up) only for the final path.
        stack: list[str] = []
        found_layers: list[tuple[int, ...] | None] = []  # per stack entry; None: missing
        pending = list(reversed(parts))
        links = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if stack:
                    stack.pop()
                    found_layers.pop()
                continue
            parent_layers = found_layers[-1] if stack else self._all
            rel = f"{'/'.join(stack)}/{comp}" if stack else comp
            layers = self._dirs.get(rel) if parent_layers is not None else None
            if layers is None and parent_layers is not None:
                found = self._lookup(rel, parent_layers)
                if isinstance(found, int):  # a symlink, in the layer it was found in
                    links += 1
                    if links > MAX_LINKS:
                        raise errors.UnsafeArchive(f"member {member!r}: too many levels of symbolic links in its path")
                    target = os.readlink(os.path.join(self.layers[found], rel))
                    if target.startswith("/"):
                        stack, found_layers = [], []
                    pending.extend(reversed(target.split("/")))
                    continue
                layers = found
                if layers is not None:
                    self._dirs[rel] = layers
            stack.append(comp)
            found_layers.append(layers)
        if create:
            self._materialise(stack, found_layers, member)
        elif None in found_layers:
            return None
        return "/".join(stack)

    def _materialise(self, stack: list[str], found_layers: list[tuple[int, ...] | None], member: str) -> None:
        """Create the directories of a resolved path that the root does not have yet."""
        for i, layers in enumerate(found_layers):
            if layers is not None and 0 in layers:
                continue
            rel = "/".join(stack[: i + 1])
            self._mkdir(rel, None if layers is None else layers[0], member)
            self._dirs[rel] = (0,) if layers is None else (0, *layers)

    def lookup(self, rel: str, layers: tuple[int, ...]) -> tuple[int, ...] | int | None:
        """What ``rel`` is in the merged view of ``layers`` (indices into ``self.layers``): the
        layers holding it as a directory, the layer of a symlink, or None when absent or
        whited out; InvalidArgument for another file type. Nothing is cached."""
        return self._lookup(rel, layers)

    def _lookup(self, rel: str, parent_layers: tuple[int, ...]) -> tuple[int, ...] | int | None:
        """What ``rel`` is in the merged view.

        A tuple of layer indices for a directory, the layer index of a symlink,
        None when absent (or whited out); raises for any other file type.
        """
        dirs: list[int] = []
        for index in parent_layers:
            path = os.path.join(self.layers[index], rel)
            st = _lstat(rel, self.root_fd) if index == 0 and self.root_fd >= 0 else _lstat(path)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                dirs.append(index)
                if self.overlay and index != len(self.layers) - 1 and _is_opaque(path):
                    break
                continue
            if dirs:
                break  # a non-directory below a directory ends the merge
            if self.overlay and is_whiteout_device(st):
                return None
            if stat.S_ISLNK(st.st_mode):
                return index
            raise errors.InvalidArgument(f"{rel!r} is not a directory, but the archive has members below it")
        return tuple(dirs) if dirs else None

    def _mkdir(self, rel: str, template_layer: int | None, member: str) -> None:
        path = os.path.join(self.root, rel)
        try:
            if self.root_fd >= 0:
                os.mkdir(rel, 0o755, dir_fd=self.root_fd)
            else:
                os.mkdir(path, 0o755)
        except FileExistsError:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                return
            if not (self.overlay and is_whiteout_device(st)):
                raise errors.InvalidArgument(f"member {member!r}: {rel!r} exists and is not a directory") from None
            # whited out earlier in this layer and now needed as a directory: an opaque one
            os.unlink(path)
            os.mkdir(path, 0o755)
            self._on_create(rel, None, True)
            return
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP):
                raise errors.InvalidArgument(
                    f"member {member!r}: cannot create directory {rel!r}: {exc.strerror}"
                ) from None
            raise
        template = None if template_layer is None else os.path.join(self.layers[template_layer], rel)
        self._on_create(rel, template, False)
