"""Pulling through to an upstream registry what the store lacks (``serve(upstream=...)``).

The store stays the source of truth: whatever it holds is served from it, and only a miss
goes upstream, to the one registry configured (never to a host a request names), and only
for requests meant for it (no ``?ns=``, or ``?ns=<upstream>``):

* a tag the store has no record of: resolve ``<upstream>/<name>:<tag>``, fetch what it names
  (an index alone; a manifest with its config), label it as a fetch does, and record the
  image under that name, as ``store.fetch`` would have named it;
* a manifest by digest (a platform's manifest, once the client chose from the index): fetch
  it and its config, labelled, so the index's record keeps them;
* a blob by digest: its descriptor (the size) must be known from a manifest the store holds
  for that repository; it is downloaded whole, verified and committed before a byte of it
  is served (so the first client waits for the download; concurrent requests for one blob
  download it once).

So the store ends up holding exactly what the clients pulled, for the platforms they pulled,
as a fetch for those platforms would have left it. Until a client has fetched an image's
layers, ``images check`` calls the image incomplete, as it would a fetch cut short.
Everything written runs under a lease held until the answer's file is open, so a concurrent
``gc`` cannot take it first. A tag the store holds is not revalidated upstream (fetch the
image again to move it); what was pulled through is kept like any fetched image
(``images rm`` and ``gc`` remove it).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.images.graph import children, walk
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import any_of
from ocistore.oci.reference import Reference, parse_reference
from ocistore.server.hoststoml import upstream_server
from ocistore.server.names import find_repository
from ocistore.transfer.context import OperationContext
from ocistore.transfer.fetch import fetch_blob, fetch_graph
from ocistore.transfer.progress import Progress
from ocistore.transfer.sources import RegistrySource

if TYPE_CHECKING:
    from ocistore import remotes
else:
    remotes = lazy_module("ocistore.remotes")

__all__ = ["PullThrough", "UpstreamFailed"]

log = logging.getLogger("ocistore.server")

_KNOWN = 65536  # descriptors remembered from manifests fetched through
_FAILURES = (errors.Unauthorized, errors.RegistryError, errors.Unavailable, errors.DigestMismatch,
             errors.InvalidArgument, errors.NotImplementedKind)


class UpstreamFailed(errors.Unavailable):
    """The upstream registry could not be asked, refused, or sent something unusable (the answer is 502)."""


def _failed(url: str, what: str, exc: Exception) -> UpstreamFailed:
    return UpstreamFailed(f"pull-through of {what} from {url}: {exc}")


class PullThrough:
    """Fetches misses of one repository namespace from ``upstream`` into the store of ``ctx``."""

    def __init__(self, ctx: OperationContext, upstream: str, registry: Mapping[str, Any] | None = None) -> None:
        """``upstream`` is a registry host (``docker.io``, ``127.0.0.1:5000``) or an ``http(s)://`` URL."""
        self.ctx = ctx
        self.domain, self.url = upstream_server(upstream)
        options = dict(registry or {})
        if self.url.startswith("http://"):
            options["plain_http"] = True
        self._options = options
        self._client: remotes.RegistryClient | None = None
        self._lock = threading.Lock()
        self._known: OrderedDict[str, Descriptor] = OrderedDict()

    @property
    def client(self) -> remotes.RegistryClient:
        """The registry client (created on first use; shared by the workers)."""
        with self._lock:
            if self._client is None:
                self._client = remotes.RegistryClient(remotes.RegistryOptions(**self._options))
            return self._client

    def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def covers(self, ns: str | None) -> bool:
        """Whether a request with this ``?ns=`` is meant for the upstream."""
        return ns is None or _normal_domain(ns) == self.domain

    def lease(self) -> AbstractContextManager[None]:
        """The lease that keeps what a pull-through writes until it is served."""
        return self.ctx.lease()

    def _ref(self, name: str, obj: str) -> Reference:
        sep = "@" if ":" in obj else ":"
        return parse_reference(f"{self.domain}/{name}{sep}{obj}")

    def _source(self, r: Reference) -> RegistrySource:
        return RegistrySource(self.client, r.name, (r.domain, r.repository))

    def _remember(self, root: Descriptor) -> None:
        """Note the children of everything under ``root`` the store now holds (their sizes)."""
        content = self.ctx.content

        def handle(desc: Descriptor) -> list[Descriptor]:
            if not content.exists(desc.digest):
                return []
            kids = children(content, desc)
            with self._lock:
                for k in kids:
                    self._known[k.digest] = k
                while len(self._known) > _KNOWN:
                    self._known.popitem(last=False)
            return [k for k in kids if mt.is_manifest(k.media_type) or mt.is_index(k.media_type)]

        walk(handle, root)

    def _fetch_shallow(self, r: Reference, desc: Descriptor) -> None:
        """Fetch ``desc`` (and a manifest's config) labelled as a fetch labels it; no index child, no layer."""
        fetch_graph(self.ctx.content, self._source(r), desc, any_of(), progress=Progress(None),
                    max_concurrent=self.client.options.max_concurrent_downloads, fetch_layers=False,
                    require_match=False)  # the index alone: clients ask for their platform next
        self._remember(desc)

    def tag(self, name: str, tag: str) -> bool:
        """Pull ``<upstream>/<name>:<tag>`` through (record included); False if upstream lacks it."""
        r = self._ref(name, tag)
        try:
            ref, desc = self.client.resolve(str(r))
            target = Descriptor(desc.media_type, desc.digest, desc.size)
            self._fetch_shallow(r, target)
        except errors.NotFound:
            return False
        except _FAILURES as exc:
            raise _failed(self.url, str(r), exc) from exc
        self.ctx.images.upsert(ref, target)
        log.info("pulled %s (%s) through from %s", ref, target.digest, self.url)
        return True

    def manifest(self, name: str, digest: str) -> bool:
        """Pull the manifest or index ``digest`` of ``<upstream>/<name>`` through; False if upstream lacks it."""
        r = self._ref(name, digest)
        try:
            _, desc = self.client.resolve(str(r))
            self._fetch_shallow(r, Descriptor(desc.media_type, desc.digest, desc.size))
        except errors.NotFound:
            return False
        except _FAILURES as exc:
            raise _failed(self.url, str(r), exc) from exc
        return True

    def _descriptor(self, name: str, ns: str | None, digest: str) -> Descriptor | None:
        with self._lock:
            found = self._known.get(digest)
        if found is not None:
            return found
        repo = find_repository(self.ctx.images, name, ns, self.domain)
        for entry in repo.entries:  # after a restart: search the repository's images
            self._remember(entry.image.target)
            with self._lock:
                found = self._known.get(digest)
            if found is not None:
                return found
        return None

    def blob(self, name: str, ns: str | None, digest: str) -> bool:
        """Download the blob ``digest`` of ``<upstream>/<name>``; False if its size is unknown or upstream lacks it."""
        desc = self._descriptor(name, ns, digest)
        if desc is None:
            log.info("blob %s of %s: no manifest in the store names it; not pulled through", digest, name)
            return False
        r = self._ref(name, digest)
        try:
            fetch_blob(self.ctx.content, self._source(r), desc, Progress(None))
        except errors.NotFound:
            return False
        except _FAILURES as exc:
            raise _failed(self.url, str(r), exc) from exc
        return True


def _normal_domain(domain: str) -> str:
    return "docker.io" if domain == "index.docker.io" else domain
