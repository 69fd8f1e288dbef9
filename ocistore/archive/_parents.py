"""Fixing up the implicit parent directories of an overlay layer applied without its lowers.

A parallel unpack applies the layers above the first into parentless upper dirs. A member
whose parents the layer has no entry for then gets fresh ``0755`` root-owned parents, where
an apply over the lower dirs copies them from the lowers (containerd's ``mkparent``), and a
member below a lower layer's symlink (``lib/x`` over ``lib -> usr/lib``) would make a real
``lib`` directory that hides the symlink. Once the lowers are committed,
:func:`adopt_lower_parents` copies each implicit parent's mode, owner, xattrs and times from
the merged lower view, or says that the layer must be applied again over its parents because
one of them is a symlink (or another non-directory) there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from ocistore import errors
from ocistore.archive._paths import Resolver, _is_opaque

__all__ = ["adopt_lower_parents", "copy_dir_attributes"]


def copy_dir_attributes(template: str, path: str, chown: bool, times: bool = True) -> tuple[int, int]:
    """Give directory ``path`` the owner (when ``chown``), mode and non-trusted xattrs of
    ``template``, and its times unless ``times`` is False; returns the (atime, mtime) in ns."""
    st = os.lstat(template)
    if chown:
        os.lchown(path, st.st_uid, st.st_gid)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    for key in os.listxattr(template, follow_symlinks=False):
        if not key.startswith("trusted."):
            os.setxattr(path, key, os.getxattr(template, key, follow_symlinks=False))
    if times:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return st.st_atime_ns, st.st_mtime_ns


def adopt_lower_parents(root: str | os.PathLike[str], implicit_dirs: Sequence[str],
                        lower_dirs: Sequence[str | os.PathLike[str]], *, chown: bool) -> bool:
    """Copy the attributes of ``implicit_dirs`` of the upper dir ``root`` from ``lower_dirs``
    (nearest first), as an overlay apply over those lowers would have set them.

    Returns False, changing nothing, when one of them is a symlink or another non-directory
    in the merged lower view: the layer must then be applied again over its parents (its
    members belong where the symlink points).
    """
    top = os.fspath(root)
    # the apply's own merge rules (whiteouts, opaque dirs, a non-directory ending a merge)
    resolver = Resolver([top, *(os.fspath(d) for d in lower_dirs)], True, lambda *_args: None)
    implicit = set(implicit_dirs)
    templates: list[tuple[str, str]] = []
    for rel in sorted(implicit, key=lambda r: r.count("/")):
        found = _lower_template(resolver, rel, implicit)
        if found is None:
            return False
        if found:
            templates.append((rel, found))
    for rel, template in templates:
        copy_dir_attributes(template, f"{top}/{rel}", chown)
    return True


def _lower_template(resolver: Resolver, rel: str, implicit: set[str]) -> str | None:
    """The nearest lower directory merged at ``rel`` ("" when the lowers have none there or the
    upper hides them), or None when an implicit component is a non-directory there."""
    top = resolver.layers[0]
    layers = tuple(range(1, len(resolver.layers)))
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        try:
            found = resolver.lookup(prefix, layers)
        except errors.InvalidArgument:
            found = -1  # a file or device: what the upper's directory hides
        if isinstance(found, int):  # a symlink (or file) in the lowers
            return None if prefix in implicit else ""  # else the layer's own directory replaces it
        if found is None:
            return ""
        if prefix not in implicit and _is_opaque(f"{top}/{prefix}"):
            return ""  # an opaque directory of the layer hides the lowers below it
        layers = found
    return f"{resolver.layers[layers[0]]}/{rel}"
