"""Where the bench's images come from, and the node model's variants.

Registry references are measured as given. Archives (an OCI layout directory or tar, a
docker-archive) are imported fetch-only into a *staging* store, which the bench then
serves over the distribution API on 127.0.0.1 (``Store.serve``), so that ocistore and
containerd both fetch every image from a registry the same way.

The node model's variants (:func:`build_variants`) are written with ocistore's own code
and no network: the base image's manifest and config plus one small app layer each, in a
temporary OCI layout that the staging store imports.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ocistore.images.image import image_parts
from ocistore.layout import RootLayout
from ocistore.oci import mediatypes as mt
from ocistore.oci.digest import digest_bytes
from ocistore.oci.imagelayout import blob_name
from ocistore.oci.reference import parse_reference
from ocistore.store import Store
from ocistore.testing.layout import build_layer

__all__ = ["BenchImage", "Staging", "build_variants", "is_archive", "short_name"]


@attrs.frozen
class BenchImage:
    """One image to measure: a short label, the reference both systems fetch, and facts."""

    label: str
    ref: str
    origin: str
    layers: int = 0
    compressed: int = 0


def is_archive(source: str) -> bool:
    """A path that exists (OCI layout dir or tar, docker-archive), rather than a reference."""
    return os.path.exists(source)


def short_name(name: str) -> str:
    """``docker.io/library/debian:gzip`` -> ``debian:gzip``; other names lose only the domain."""
    ref = parse_reference(name)
    path = ref.path[len("library/"):] if ref.path.startswith("library/") else ref.path
    return f"{path}:{ref.tag}" if ref.tag else path


class Staging:
    """A fetch-only store of the archives' images, served on 127.0.0.1 while open."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Open (create) the staging store at ``root``."""
        self.root = Path(root)
        self.store = Store(self.root, plain_http=True)
        self._server: Any = None

    def add_archive(self, path: str) -> list[str]:
        """Import every image of the archive (fetch-only); their stored names."""
        return [img.name for img in self.store.import_archive(path, fetch_only=True)]

    def add_ref(self, ref: str, plain_http: bool = False) -> str:
        """Fetch ``ref`` into the staging store (for the node model's base); its stored name."""
        return self.store.fetch(ref, plain_http=plain_http).name

    @contextmanager
    def serving(self) -> Iterator[str]:
        """Serve the staging store; yields its ``host:port``."""
        with self.store.serve("127.0.0.1:0", workers=8) as srv:
            yield str(srv.address)

    def image(self, name: str, address: str, origin: str) -> BenchImage:
        """The :class:`BenchImage` of a stored image as served at ``address``."""
        ref = parse_reference(name)
        parts = image_parts(self.store.content, self.store.images.get(name).target)
        return BenchImage(short_name(name), f"{address}/{ref.path}:{ref.tag or 'latest'}", origin,
                          layers=len(parts.layers), compressed=sum(d.size for d in parts.layers))

    def close(self) -> None:
        """Close the staging store (its files stay until the work dir is removed)."""
        self.store.close()


def build_variants(staging: Staging, base: str, count: int, work: Path, app_bytes: int = 2 << 20,
                   seed: int = 10) -> list[str]:
    """``count`` images that share ``base``'s layers, each with one app layer of its own.

    The app layer holds ``/opt/app<i>/`` with a few files of ``app_bytes`` in total
    (random, so they do not compress away). Returns the stored names
    (``bench.local/node/app<i>:1``) in order.
    """
    store = staging.store
    layout = RootLayout(staging.root)
    parts = image_parts(store.content, store.images.get(base).target)
    manifest = json.loads(layout.content.blob_path(parts.manifest_desc.digest).read_bytes())
    config = json.loads(layout.content.blob_path(parts.manifest.config.digest).read_bytes())
    out = work / "variants"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes | None, digest: str | None = None) -> dict[str, Any]:
        d = digest or digest_bytes(data or b"")
        p = out / blob_name(d)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            if data is None:
                src = layout.content.blob_path(d)
                try:
                    os.link(src, p)
                except OSError:
                    shutil.copyfile(src, p)
            else:
                p.write_bytes(data)
        return {"digest": d, "size": p.stat().st_size}

    for layer in parts.layers:
        put(None, layer.digest)
    rng = random.Random(seed)
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    names = []
    for i in range(count):
        files: dict[str, Any] = {f"opt/app{i}": "<dir>"}
        for k in range(4):
            files[f"opt/app{i}/part{k}.bin"] = rng.randbytes(app_bytes // 4)
        files[f"opt/app{i}/VERSION"] = f"app {i}\n"
        blob, tar = build_layer(files, "gzip")
        ldesc = {"mediaType": mt.OCI_LAYER_GZIP, **put(blob)}
        cfg = dict(config)
        cfg["rootfs"] = {"type": "layers", "diff_ids": [*config["rootfs"]["diff_ids"], digest_bytes(tar)]}
        cfg["history"] = [*config.get("history", []), {"created_by": f"bench app layer {i}"}]
        cdesc = {"mediaType": mt.OCI_CONFIG, **put(json.dumps(cfg).encode())}
        man = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cdesc,
               "layers": [*manifest["layers"], ldesc]}
        mdesc: dict[str, Any] = {"mediaType": mt.OCI_MANIFEST, **put(json.dumps(man).encode()),
                                 "platform": {"architecture": cfg.get("architecture", "amd64"),
                                              "os": cfg.get("os", "linux")}}
        name = f"bench.local/node/app{i}:1"
        mdesc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"}
        index["manifests"].append(mdesc)
        names.append(name)
    (out / "index.json").write_text(json.dumps(index))
    staging.add_archive(str(out))
    shutil.rmtree(out, ignore_errors=True)
    return names


def resolve(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split sources into (archives, references)."""
    archives = [s for s in sources if is_archive(s)]
    return archives, [s for s in sources if not is_archive(s)]
