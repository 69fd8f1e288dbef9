"""Applying the members of one layer onto a root directory (native or overlay upper dir)."""

from __future__ import annotations

import errno
import os
import stat

from ocistore import errors
from ocistore.archive import _whiteouts
from ocistore.archive._dedup import FileDeduper
from ocistore.archive._parents import copy_dir_attributes
from ocistore.archive._paths import Resolver, clean_name
from ocistore.archive._tarformat import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarEntry,
    TarReader,
)
from ocistore.archive._usage import UsageCounter
from ocistore.archive._writer import (
    FILE_FLAGS,
    MAX_NS,
    MetadataPolicy,
    create_file,
    is_overlay_whiteout,
    remove_path,
    set_xattrs,
    times_of,
    write_file_data,
)

__all__ = ["Applier"]

# errors that say something about the machine, not the archive: passed through unchanged
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})
_MAX_DEVICE_NUMBER = 0xFFFFFFFF


class Applier:
    """Applies tar members to ``root``; one instance per layer."""

    def __init__(
        self,
        root: str,
        *,
        overlay: bool,
        lower_dirs: list[str],
        chown: bool,
        devices: bool,
        dedup: FileDeduper | None = None,
    ) -> None:
        self.root = root
        self.dedup = dedup  # links written files to identical committed ones (``_dedup``)
        self.overlay = overlay
        self.policy = MetadataPolicy(chown)
        self.devices = devices
        self.resolver = Resolver([root, *lower_dirs], overlay, self._parent_created)
        self.unpacked: set[str] = set()  # real paths written by this layer
        self.keep: set[str] = set()  # their ancestors: directories a whiteout must not remove
        self.dir_times: list[tuple[str, int, int]] = []
        self.removals = 0
        self.entries = 0
        self.skipped_devices = 0
        self.counter = UsageCounter(root)  # what this apply allocates, for the snapshot's usage
        self.implicit_dirs: list[str] = []  # parents created with no lower dir to copy (``adopt_lower_parents``)
        # members are created relative to this descriptor of the root (``rel``, dir_fd=):
        # the same real directories as ``root/rel``, without walking the root's own path each time
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.resolver.root_fd = self.root_fd

    def close(self) -> None:
        """Release the root's descriptor."""
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = self.resolver.root_fd = -1

    # -- driver ----------------------------------------------------------------------------

    def apply_all(self, reader: TarReader) -> None:
        """Apply every member, then the directory times."""
        apply = self.apply
        next_entry = reader.next
        entries = 0
        try:
            while (entry := next_entry()) is not None:
                entries += 1
                try:
                    apply(entry, reader)
                except errors.Error:
                    raise
                except OSError as exc:
                    raise _archive_error(exc, entry.name) from None
        finally:
            self.entries += entries
        try:
            self._apply_dir_times()
        except OSError as exc:
            raise _archive_error(exc, "directory times") from None

    def disk_usage(self) -> tuple[int, int] | None:
        """``(allocated bytes, inodes)`` under the root, when the apply alone accounts for them."""
        if self.removals:
            return None
        return self.counter.result()

    def apply(self, entry: TarEntry, reader: TarReader) -> None:
        """Apply one member (its data is read from ``reader``)."""
        parts = clean_name(entry.name)
        if not parts:
            return  # the root itself: left as it is, as containerd does
        base = parts[-1]
        if base.startswith(".wh."):
            _whiteouts.apply_whiteout(self, entry, parts)
            return
        parent = self.resolver.parent(parts, entry.name)
        assert parent is not None
        rel = f"{parent}/{base}" if parent else base
        kind = entry.type
        if kind == TYPE_REG:
            self._regular(entry, rel, reader)
        elif kind == TYPE_DIR:
            self._directory(entry, rel)
        elif kind == TYPE_SYMLINK:
            self._symlink(entry, rel)
        elif kind == TYPE_LINK:
            self._hardlink(entry, rel)
        elif kind in (TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO):
            if not self._special(entry, rel):
                return
        else:  # pragma: no cover - the parser only returns the types above
            raise errors.InvalidArgument(f"member {entry.name!r}: unsupported type {kind!r}")
        self.mark(rel)

    def mark(self, rel: str) -> None:
        """Record ``rel`` (and its ancestors) as written by this layer."""
        self.unpacked.add(rel)
        parent = rel.rpartition("/")[0]
        keep = self.keep
        while parent and parent not in keep:
            keep.add(parent)
            parent = parent.rpartition("/")[0]

    # -- entry types -------------------------------------------------------------------------

    def _replacing(self, rel: str) -> None:
        """A non-directory is about to take ``rel``: cached directories there are stale."""
        if self.resolver.is_cached_dir(rel):
            self.resolver.invalidate()

    def _clear(self, rel: str, path: str) -> None:
        """Remove what is at ``path`` before creating a non-directory there."""
        if remove_path(path):
            self.removals += 1
            self.resolver.invalidate()

    def _regular(self, entry: TarEntry, rel: str, reader: TarReader) -> None:
        self._replacing(rel)
        mode = entry.mode
        try:
            fd = os.open(rel, FILE_FLAGS, mode & 0o777, dir_fd=self.root_fd)  # create_file's first try
        except FileExistsError:
            try:
                fd = create_file(rel, mode & 0o777, self.root_fd)
            except IsADirectoryError:
                self._clear(rel, f"{self.root}/{rel}")
                fd = create_file(rel, mode & 0o777, self.root_fd)
        try:
            if entry.sparse is None:  # write_file_data, inline for the common case
                if entry.size:
                    reader.copy_to_fd(fd, entry.size)
            else:
                write_file_data(fd, entry, reader)
            # one fstat tells which of chown and chmod the new inode still needs (it was
            # created by this process, so it carries our euid and the gid the kernel chose:
            # egid, or the parent's under a setgid dir or a grpid mount), and gives the usage
            st = os.fstat(fd)
            if self.policy.chown and (st.st_uid != entry.uid or st.st_gid != entry.gid):
                os.fchown(fd, entry.uid, entry.gid)
            if entry.xattrs:
                set_xattrs(fd, entry, True)
                st = os.fstat(fd)  # an xattr may take a block of its own
            if stat.S_IMODE(st.st_mode) != mode:  # bits the umask cleared, setuid/setgid/sticky
                os.fchmod(fd, mode)  # after the chown, which would clear setuid/setgid
            mtime = entry.mtime_ns
            if entry.atime_ns is None and 0 <= mtime <= MAX_NS:  # times_of(entry), inline
                os.utime(fd, ns=(mtime, mtime))
            else:
                os.utime(fd, ns=times_of(entry))
            self.counter.file(rel, st)
        finally:
            os.close(fd)
        dedup = self.dedup
        if (dedup is not None and entry.size >= dedup.threshold and entry.sparse is None
                and dedup.file_written(rel, f"{self.root}/{rel}")):
            self.counter.removed()  # now a link to another snapshot's file: the commit walks the tree

    def _directory(self, entry: TarEntry, rel: str) -> None:
        opaque = False
        path = f"{self.root}/{rel}"
        try:
            os.mkdir(rel, 0o700, dir_fd=self.root_fd)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                opaque = self.overlay and is_overlay_whiteout(path)
                os.unlink(path)
                self._replacing(rel)
                os.mkdir(path, 0o700)
        self.resolver.note_dir(rel)
        if self.overlay:
            self.resolver.note_upper_dir(rel)
            if opaque:  # whited out earlier in this layer, recreated: hide the lower dirs
                _whiteouts.set_opaque(self, rel, entry.name)
        self._metadata(entry, rel, path, regular_or_dir=True)
        self.dir_times.append((rel, *times_of(entry)))
        self.counter.directory(rel)

    def _symlink(self, entry: TarEntry, rel: str) -> None:
        self._replacing(rel)
        path = f"{self.root}/{rel}"
        try:
            os.symlink(entry.linkname, rel, dir_fd=self.root_fd)
        except FileExistsError:
            self._clear(rel, path)
            os.symlink(entry.linkname, rel, dir_fd=self.root_fd)
        self._metadata(entry, rel, path, regular_or_dir=False, chmod=False)
        self.counter.other(rel)

    def _hardlink(self, entry: TarEntry, rel: str) -> None:
        target_parts = clean_name(entry.linkname, f"hard link target of {entry.name!r}:")
        if not target_parts:
            raise errors.UnsafeArchive(f"member {entry.name!r}: hard link to the root directory")
        parent = self.resolver.parent(target_parts, entry.name, create=False)
        target_rel = target_parts[-1] if not parent else f"{parent}/{target_parts[-1]}"
        st = None if parent is None else _lstat(f"{self.root}/{target_rel}")
        if st is None:
            raise errors.UnsafeArchive(
                f"member {entry.name!r}: hard link target {entry.linkname!r} is not extracted in this root"
            )
        if stat.S_ISDIR(st.st_mode):
            raise errors.UnsafeArchive(f"member {entry.name!r}: hard link to directory {entry.linkname!r}")
        if target_rel == rel:
            return
        self._replacing(rel)
        path = f"{self.root}/{rel}"
        target = f"{self.root}/{target_rel}"
        try:
            os.link(target, path, follow_symlinks=False)
        except FileExistsError:
            self._clear(rel, path)
            os.link(target, path, follow_symlinks=False)
        self.counter.other(rel)
        # no metadata: a hard link shares the inode (and metadata) of its target

    def _special(self, entry: TarEntry, rel: str) -> bool:
        path = f"{self.root}/{rel}"
        if entry.type == TYPE_FIFO:
            mode = stat.S_IFIFO
            device = 0
        else:
            if not self.devices:
                self.skipped_devices += 1
                return False
            if not (0 <= entry.devmajor <= _MAX_DEVICE_NUMBER and 0 <= entry.devminor <= _MAX_DEVICE_NUMBER):
                raise errors.InvalidArgument(f"member {entry.name!r}: device number out of range")
            mode = stat.S_IFCHR if entry.type == TYPE_CHAR else stat.S_IFBLK
            device = os.makedev(entry.devmajor, entry.devminor)
        self._replacing(rel)
        try:
            os.mknod(path, mode | (entry.mode & 0o777), device)
        except FileExistsError:
            self._clear(rel, path)
            os.mknod(path, mode | (entry.mode & 0o777), device)
        except PermissionError:
            if mode == stat.S_IFIFO:
                raise
            self.skipped_devices += 1  # no CAP_MKNOD after all (user namespace, container)
            return False
        self._metadata(entry, rel, path, regular_or_dir=False)
        self.counter.other(rel)
        return True

    def _metadata(self, entry: TarEntry, rel: str, path: str, *, regular_or_dir: bool, chmod: bool = True) -> None:
        """Owner, xattrs, mode and times on ``rel`` = ``path`` (never following a final symlink)."""
        root_fd = self.root_fd
        if self.policy.chown:
            os.chown(rel, entry.uid, entry.gid, dir_fd=root_fd, follow_symlinks=False)
        if entry.xattrs:
            set_xattrs(path, entry, regular_or_dir)
        if chmod:  # what this member just created, never a symlink
            os.chmod(rel, entry.mode, dir_fd=root_fd)
        if entry.type != TYPE_DIR:
            os.utime(rel, ns=times_of(entry), dir_fd=root_fd, follow_symlinks=False)

    # -- parents and directory times -----------------------------------------------------------

    def _parent_created(self, rel: str, template: str | None, opaque: bool) -> None:
        """A missing parent directory was created: copy a lower dir's attributes (overlay)."""
        self.mark(rel)
        self.counter.directory(rel)
        if opaque:
            _whiteouts.set_opaque(self, rel, rel)
        if template is None:
            if not opaque:
                self.implicit_dirs.append(rel)
            return
        # the times are set at the end: the members written below it change them
        atime, mtime = copy_dir_attributes(template, f"{self.root}/{rel}", self.policy.chown, times=False)
        self.dir_times.append((rel, atime, mtime))

    def _apply_dir_times(self) -> None:
        verify = self.removals > 0
        for rel, atime, mtime in self.dir_times:
            if verify and not self._is_real_dir(rel):
                continue
            try:
                os.utime(rel, ns=(atime, mtime), dir_fd=self.root_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue

    def _is_real_dir(self, rel: str) -> bool:
        """Whether every component of ``rel`` is still a real directory (no symlink on the way)."""
        path = self.root
        for part in rel.split("/"):
            path = f"{path}/{part}"
            st = _lstat(path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return False
        return True


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _archive_error(exc: OSError, member: str) -> OSError | errors.Error:
    if exc.errno in _ENVIRONMENT_ERRNOS:
        return exc
    what = exc.strerror or str(exc)
    return errors.InvalidArgument(f"cannot apply member {member!r}: {what}")
