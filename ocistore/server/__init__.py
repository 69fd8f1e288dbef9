"""``ocistore serve``: a store's images over the read side of the OCI distribution API.

```python
with store.serve(listen="127.0.0.1:0") as server:
    print(server.url)        # http://127.0.0.1:41234; try: skopeo inspect docker://<address>/debian:12
```

* :mod:`ocistore.server.app` -- the endpoints (manifests, blobs, tags, errors, auth);
* :mod:`ocistore.server.names` -- which image records a repository name (and ``?ns=``) means;
* :mod:`ocistore.server.ranges` -- ``Range`` requests;
* :mod:`ocistore.server.httpd` -- the bounded threaded HTTP/1.1 server and its limits;
* :mod:`ocistore.server.pullthrough` -- fetching misses from an upstream registry;
* :mod:`ocistore.server.uploads` -- accepting pushes (``allow_push=True``);
* :mod:`ocistore.server.hoststoml` -- a containerd ``hosts.toml`` naming the server a mirror.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ocistore.server.app import CredentialsCheck, RegistryApp, Request, Response
from ocistore.server.hoststoml import hosts_toml
from ocistore.server.httpd import HTTPServer, parse_listen
from ocistore.server.pullthrough import PullThrough, UpstreamFailed
from ocistore.server.uploads import Uploads
from ocistore.transfer.context import OperationContext

__all__ = ["CredentialsCheck", "HTTPServer", "PullThrough", "RegistryApp", "Request", "Response", "Server",
           "UpstreamFailed", "Uploads", "hosts_toml", "parse_listen"]


class Server(HTTPServer):
    """A store namespace served over the distribution API (what ``Store.serve`` returns).

    ``start()`` binds and serves in background threads, ``stop()`` ends it, ``address`` is
    the ``host:port`` bound (``listen="127.0.0.1:0"`` picks a free port), ``url`` its URL,
    ``stats`` counters of connections, requests, statuses and bytes sent. A context manager
    starts and stops it. ``serve_forever()`` blocks until ``stop()``.
    """

    def __init__(
        self, ctx: OperationContext, listen: str = "127.0.0.1:5000", upstream: str | None = None, *,
        workers: int = 16, queue_size: int = 64, timeout: float = 30.0, keepalive: float = 5.0,
        tls_cert: str | None = None, tls_key: str | None = None, credentials: CredentialsCheck | None = None,
        default_registry: str | None = None, access_log: bool = False, registry: Mapping[str, Any] | None = None,
        allow_push: bool = False,
    ) -> None:
        """Serve the namespace of ``ctx``; see :class:`HTTPServer` for the limits.

        ``upstream`` (a registry host or URL) pulls what the store lacks through from that
        registry (:mod:`ocistore.server.pullthrough`), reached with the ``registry`` options.
        ``allow_push`` accepts blob uploads and manifest PUTs (:mod:`ocistore.server.uploads`)
        from every client that passes ``credentials`` (from every client without them).
        """
        self.namespace = ctx.namespace
        self.pull_through = PullThrough(ctx, upstream, registry) if upstream is not None else None
        self.uploads = Uploads(ctx) if allow_push else None
        self.registry = RegistryApp(ctx.content, ctx.images, credentials=credentials,
                                    default_registry=default_registry, pull_through=self.pull_through,
                                    uploads=self.uploads)
        super().__init__(self.registry.handle, listen, workers=workers, queue_size=queue_size, timeout=timeout,
                         keepalive=keepalive, tls_cert=tls_cert, tls_key=tls_key, access_log=access_log)
        self.accepts_bodies = allow_push

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (see :meth:`HTTPServer.stop`) and close the upstream connections."""
        super().stop(timeout)
        if self.pull_through is not None:
            self.pull_through.close()
