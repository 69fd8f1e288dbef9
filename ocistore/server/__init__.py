"""``ocistore serve``: a store's images over the read side of the OCI distribution API.

```python
with store.serve(listen="127.0.0.1:0") as server:
    print(server.url)        # http://127.0.0.1:41234; try: skopeo inspect docker://<address>/debian:12
```

* :mod:`ocistore.server.app` -- the endpoints (manifests, blobs, tags, errors, auth);
* :mod:`ocistore.server.names` -- which image records a repository name (and ``?ns=``) means;
* :mod:`ocistore.server.ranges` -- ``Range`` requests;
* :mod:`ocistore.server.httpd` -- the bounded threaded HTTP/1.1 server and its limits;
* :mod:`ocistore.server.hoststoml` -- a containerd ``hosts.toml`` naming the server a mirror.
"""

from __future__ import annotations

from ocistore import errors
from ocistore.server.app import CredentialsCheck, RegistryApp, Request, Response
from ocistore.server.hoststoml import hosts_toml
from ocistore.server.httpd import HTTPServer, parse_listen
from ocistore.transfer.context import OperationContext

__all__ = ["CredentialsCheck", "HTTPServer", "RegistryApp", "Request", "Response", "Server", "hosts_toml",
           "parse_listen"]


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
        default_registry: str | None = None, access_log: bool = False,
    ) -> None:
        """Serve the namespace of ``ctx``; see :class:`HTTPServer` for the limits."""
        if upstream is not None:
            raise errors.NotImplementedKind(
                "serve(upstream=...): pulling through to an upstream registry is not implemented yet; "
                "fetch the images into the store first"
            )
        self.namespace = ctx.namespace
        self.registry = RegistryApp(ctx.content, ctx.images, credentials=credentials,
                                    default_registry=default_registry)
        super().__init__(self.registry.handle, listen, workers=workers, queue_size=queue_size, timeout=timeout,
                         keepalive=keepalive, tls_cert=tls_cert, tls_key=tls_key, access_log=access_log)
