"""The image graph: children of a blob, a generic walk, and the handlers that shape it.

This is containerd's ``core/images`` handler model in Python. A *handler* takes a
descriptor and returns the children to visit next; :func:`walk` visits a graph depth-first,
each digest once, in the order handlers return children. Handlers compose by wrapping:

* :func:`children_handler` reads an index or manifest from a provider and returns what
  it points at (``images.ChildrenHandler``);
* :func:`filter_platforms` keeps an index's manifests for a platform matcher, best match
  first, optionally only the best ``limit`` (``FilterPlatforms`` + ``LimitManifests``);
* :func:`present_only` drops children a provider does not hold (a fetch for one platform
  keeps only that platform's manifest; discarded layers are gone).

Fetch, export, check, size, completeness and the CLI all walk graphs with these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ocistore import errors
from ocistore.content.types import Provider
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.manifest import children as parse_children
from ocistore.oci.platform import Platform, PlatformMatcher, preference_key

__all__ = [
    "GC_REF_CONTENT",
    "Handler",
    "child_gc_labels",
    "children",
    "children_handler",
    "filter_manifests",
    "filter_platforms",
    "present_only",
    "walk",
]

GC_REF_CONTENT = "containerd.io/gc.ref.content"

Handler = Callable[[Descriptor], Sequence[Descriptor]]
"""Called once per visited descriptor; returns the children to visit, in order."""


def children(provider: Provider, desc: Descriptor) -> list[Descriptor]:
    """What ``desc`` points at: an index's manifests, a manifest's config and layers, else ``[]``.

    Raises NotFound when ``desc`` is an index or manifest the provider does not hold, and
    InvalidArgument when it does not parse as its media type.
    """
    if not (mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type)):
        return []
    return parse_children(desc.media_type, provider.read(desc.digest))


def children_handler(provider: Provider) -> Handler:
    """A handler returning :func:`children` read from ``provider``."""
    return lambda desc: children(provider, desc)


def walk(handler: Handler, *roots: Descriptor) -> None:
    """Visit ``roots`` and everything ``handler`` returns, depth-first, each digest once.

    Iterative, so a hostile graph of deeply nested indexes cannot exhaust the stack.
    """
    seen: set[str] = set()
    stack: list[Iterator[Descriptor]] = [iter(roots)]
    while stack:
        desc = next(stack[-1], None)
        if desc is None:
            stack.pop()
            continue
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        kids = handler(desc)
        if kids:
            stack.append(iter(kids))


def filter_manifests(
    manifests: Sequence[Descriptor], matcher: PlatformMatcher | None, limit: int = 0,
) -> list[Descriptor]:
    """containerd's ``FilterPlatforms`` + ``LimitManifests``: keep matching children, best first.

    Children without a platform pass (their config decides later, when it can be read).
    ``matcher=None`` keeps everything, in order. With ``limit>0`` and nothing left: NotFound.
    """
    if matcher is None:
        kept = list(manifests)
    else:
        kept = [d for d in manifests if d.platform is None or matcher.match(d.platform)]
        key = preference_key(matcher)
        with_p = [d for d in kept if d.platform is not None]
        without = [d for d in kept if d.platform is None]
        kept = sorted(with_p, key=lambda d: key(d.platform or Platform("", ""))) + without
    if limit > 0:
        if not kept:
            raise errors.NotFound("no match for platform in manifest")
        kept = kept[:limit]
    return kept


def filter_platforms(handler: Handler, matcher: PlatformMatcher | None, limit: int = 0) -> Handler:
    """Wrap ``handler`` so that an index's children are :func:`filter_manifests`-ed."""

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        kids = handler(desc)
        if mt.is_index(desc.media_type):
            return filter_manifests(kids, matcher, limit)
        return kids

    return handle


def present_only(handler: Handler, has: Callable[[str], bool]) -> Handler:
    """Wrap ``handler`` so that children whose digest ``has`` denies are not visited."""
    return lambda desc: [d for d in handler(desc) if has(d.digest)]


def child_gc_labels(kids: Sequence[Descriptor], layers: bool = True) -> dict[str, str]:
    """containerd's ``ChildGCLabels``: ``...config``, ``...m.<i>``, ``...l.<i>``, ``...<i>``.

    ``layers=False`` leaves the layers out (``ChildGCLabelsFilterLayers``).
    """
    out: dict[str, str] = {}
    counters: dict[str, int] = {}
    for child in kids:
        mtype = child.media_type
        if mt.is_config(mtype) or mtype == mt.OCI_EMPTY:
            pfx = f"{GC_REF_CONTENT}.config"
        elif mt.is_manifest(mtype) or mt.is_index(mtype):
            pfx = f"{GC_REF_CONTENT}.m."
        elif mt.is_layer(mtype):
            if not layers:
                continue
            pfx = f"{GC_REF_CONTENT}.l."
        else:
            pfx = f"{GC_REF_CONTENT}."
        idx = counters.get(pfx, 0)
        counters[pfx] = idx + 1
        k = f"{pfx}{idx}" if (idx > 0 or pfx.endswith(".")) else pfx
        out[k] = child.digest
    return out
