"""Registry client: resolve, fetch (verified, resumable), push, auth, hosts.toml.

```python
from ocistore.remotes import RegistryClient, RegistryOptions, Retry

with RegistryClient(RegistryOptions(plain_http=True)) as client:
    name, desc = client.resolve("127.0.0.1:5000/debian:gzip")
    manifest = client.fetch_bytes(name, desc)
```
"""

from __future__ import annotations

from ocistore.remotes.client import MANIFEST_ACCEPT, MAX_BLOB_BYTES, MAX_MANIFEST_SIZE, RegistryClient
from ocistore.remotes.fetch import BlobReader
from ocistore.remotes.hosts import RegistryHost, TLSConfig, configure_hosts
from ocistore.remotes.options import RegistryOptions, Retry, Timeout

__all__ = [
    "MANIFEST_ACCEPT",
    "MAX_BLOB_BYTES",
    "MAX_MANIFEST_SIZE",
    "BlobReader",
    "RegistryClient",
    "RegistryHost",
    "RegistryOptions",
    "Retry",
    "TLSConfig",
    "Timeout",
    "configure_hosts",
]
