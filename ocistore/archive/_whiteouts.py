"""Whiteouts (``.wh.<name>``) and opaque markers (``.wh..wh..opq``).

Native mode (the root is a full copy of the parent): a whiteout removes what it
names, an opaque marker empties its directory. Overlay mode (the root is an
overlayfs upper dir): a whiteout becomes a character device 0:0 and an opaque
marker the ``trusted.overlay.opaque=y`` xattr.

Following the OCI image spec, a whiteout only hides what lower layers hold:
members this same layer wrote stay. A directory that is whited out and then
written again by the same layer therefore hides its lower contents (in overlay
mode it becomes opaque; containerd's overlay applier departs from the spec here).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import Protocol

from ocistore import errors
from ocistore.archive._paths import Resolver
from ocistore.archive._tarformat import TarEntry
from ocistore.archive._usage import UsageCounter
from ocistore.archive._writer import MetadataPolicy, times_of
from ocistore.oci.paths import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, whiteout_target

__all__ = ["OPAQUE", "WHITEOUT_PREFIX", "LayerTarget", "apply_whiteout", "set_opaque"]

OPAQUE = WHITEOUT_OPAQUE
OPAQUE_XATTR = "trusted.overlay.opaque"


class LayerTarget(Protocol):
    """What whiteout handling reads and updates of the layer being applied (the ``Applier``).

    Declared here so that this module need not import the applier; it is satisfied
    structurally and costs nothing at run time.
    """

    root: str  # the directory the layer is applied to (a full copy, or the overlay upper dir)
    overlay: bool  # root is an overlayfs upper dir: whiteouts become 0:0 devices and xattrs
    resolver: Resolver  # resolves members' parents in root; invalidate() after changing the tree
    policy: MetadataPolicy  # policy.chown: whether whiteout devices get the member's owner
    unpacked: set[str]  # paths (relative to root) this layer wrote: a whiteout keeps them
    keep: set[str]  # their ancestors: directories a whiteout must not remove
    removals: int  # count of removed paths; a native whiteout increments it
    counter: UsageCounter  # told of the whiteout devices created (overlay mode)


def apply_whiteout(applier: LayerTarget, entry: TarEntry, parts: list[str]) -> None:
    """Handle a member whose base name starts with ``.wh.``."""
    name = whiteout_target(parts[-1], entry.name)
    if name is None:
        return  # other AUFS metadata (.wh..wh.plnk, ...): never part of the file system
    if name == OPAQUE:
        _opaque(applier, entry, parts)
        return
    if applier.overlay:
        _overlay_whiteout(applier, entry, parts, name)
    else:
        parent = applier.resolver.parent(parts, entry.name, create=False)
        if parent is None:
            return  # the parent does not exist: nothing to hide
        _prune(applier, f"{parent}/{name}" if parent else name)


def _opaque(applier: LayerTarget, entry: TarEntry, parts: list[str]) -> None:
    if applier.overlay:
        parent = applier.resolver.parent(parts, entry.name)
        assert parent is not None
        set_opaque(applier, parent, entry.name)
        return
    parent = applier.resolver.parent(parts, entry.name, create=False)
    if parent is None:
        return
    _prune_children(applier, parent)


# -- native mode ---------------------------------------------------------------------------


def _prune(applier: LayerTarget, rel: str) -> None:
    """Remove ``rel`` unless this layer wrote it; keep what this layer wrote below it."""
    path = f"{applier.root}/{rel}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if rel in applier.unpacked or rel in applier.keep:
        if stat.S_ISDIR(st.st_mode):
            _prune_children(applier, rel)
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    applier.removals += 1
    applier.resolver.invalidate()


def _prune_children(applier: LayerTarget, rel: str) -> None:
    path = f"{applier.root}/{rel}" if rel else applier.root
    prefix = f"{rel}/" if rel else ""
    with os.scandir(path) as listing:
        names = [item.name for item in listing]
    for name in names:
        _prune(applier, prefix + name)


# -- overlay mode --------------------------------------------------------------------------


def _overlay_whiteout(applier: LayerTarget, entry: TarEntry, parts: list[str], name: str) -> None:
    parent = applier.resolver.parent(parts, entry.name)
    assert parent is not None
    rel = f"{parent}/{name}" if parent else name
    path = f"{applier.root}/{rel}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        # written by this layer already (the upper dir starts empty): it stays, but a
        # directory must no longer show the lower layers' contents
        if stat.S_ISDIR(st.st_mode):
            set_opaque(applier, rel, entry.name)
        return
    if applier.resolver.is_cached_dir(rel):
        applier.resolver.invalidate()
    try:
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        raise errors.InvalidArgument(
            f"whiteout {entry.name!r}: cannot create an overlay whiteout device without CAP_MKNOD"
        ) from None
    if applier.policy.chown:
        os.lchown(path, entry.uid, entry.gid)
    os.utime(path, ns=times_of(entry), follow_symlinks=False)
    applier.counter.other(rel)


def set_opaque(applier: LayerTarget, rel: str, member: str) -> None:
    """Mark the upper directory ``rel`` opaque (hides the lower layers' contents)."""
    path = f"{applier.root}/{rel}" if rel else applier.root
    try:
        os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise errors.InvalidArgument(
                f"member {member!r}: cannot set {OPAQUE_XATTR} on {rel or '/'!r} ({exc.strerror}); "
                "overlay mode needs CAP_SYS_ADMIN and a file system with trusted xattrs"
            ) from None
        raise
    applier.resolver.invalidate()
