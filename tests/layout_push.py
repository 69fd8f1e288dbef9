"""Push an image of an OCI layout on disk to a registry (for tests that need crafted images there).

The registry is a real one (``tests/registry_fixtures.py``); blobs go up with ocistore's own
push client, children before parents, so the registry serves byte-identical manifests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.imagelayout import blob_name
from ocistore.remotes import RegistryClient, RegistryOptions

__all__ = ["push_layout_image"]


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / blob_name(digest)).read_bytes()


def _push(client: RegistryClient, layout: Path, desc: Descriptor, repo: str, tag: str | None) -> None:
    """Push ``desc`` and what it points at; the top one under ``tag``, children by digest."""
    data = _blob(layout, desc.digest)
    ref = f"{repo}:{tag}" if tag else f"{repo}@{desc.digest}"
    if mediatypes.is_index(desc.media_type):
        for child in json.loads(data)["manifests"]:
            _push(client, layout, Descriptor.from_json(child), repo, None)
    elif mediatypes.is_manifest(desc.media_type):
        doc = json.loads(data)
        for child in [doc["config"], *doc["layers"]]:
            with (layout / blob_name(child["digest"])).open("rb") as f:
                client.push_blob(ref, Descriptor.from_json(child), f)
    client.push_manifest(ref, Descriptor(desc.media_type, desc.digest, len(data)), data)


def push_layout_image(registry: Any, layout: Path, name: str, ref: str) -> str:
    """Push the image called ``name`` in ``layout``'s index.json as ``<registry>/<ref>``.

    Returns the full reference pushed.
    """
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"] if m.get("annotations", {}).get("io.containerd.image.name") == name]
    full = registry.ref(ref)
    repo, _, tag = full.rpartition(":")
    with RegistryClient(RegistryOptions(**registry.client_options())) as client:
        _push(client, layout, Descriptor.from_json(entry), repo, tag)
    return full
