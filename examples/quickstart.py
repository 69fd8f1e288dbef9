"""ocistore quick start: fetch-only import, lazy unpack on first container create, gc.

Runs with no registry and no network: it builds a small OCI image itself in a temp dir.

    pip install -e . && python examples/quickstart.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ocistore import Store
from ocistore.testing.layout import write_layout


def make_image(layout: Path) -> str:
    """An image of two layers: a ~24 MB 'base' and an app layer that deletes a file."""
    rnd = os.urandom(1 << 16)
    base: dict[str, bytes | str | None] = {"etc/": None, "etc/os-release": "ID=quickstart\n", "usr/lib/": None}
    for i in range(96):  # compressible-ish data, like real binaries
        base[f"usr/lib/lib{i:03d}.so"] = (rnd[: 4096 * (i % 8 + 1)] + bytes(range(256)) * 256) * 2
    app: dict[str, bytes | str | tuple[str, str] | None] = {
        "app/": None, "app/main.py": "print('hello from ocistore')\n",
        "usr/lib/lib000.so": ("whiteout", ""), "app/current": ("symlink", "main.py"),
    }
    name = "example.com/quickstart/app:1.0"
    write_layout(layout, {name: [base, app]})
    return name


def mib(n: int) -> str:
    return f"{n / (1 << 20):8.1f} MiB"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ocistore-quickstart-") as tmp:
        name = make_image(Path(tmp) / "layout")
        rows = []
        with Store(Path(tmp) / "store") as store:
            snapshotter = "overlayfs" if os.geteuid() == 0 else "native"
            t = time.perf_counter()
            store.import_archive(Path(tmp) / "layout", fetch_only=True)
            rows.append(("import (fetch-only)", time.perf_counter() - t, store.disk_usage()))
            t = time.perf_counter()
            container = store.containers.create("demo", name, snapshotter=snapshotter)
            rows.append(("create container (lazy unpack)", time.perf_counter() - t, store.disk_usage()))
            mount = container.mounts[0]
            t = time.perf_counter()
            store.containers.create("demo2", name, snapshotter=snapshotter)
            rows.append(("create 2nd container", time.perf_counter() - t, store.disk_usage()))
            store.containers.delete("demo")
            store.containers.delete("demo2")
            store.images.delete(name)
            t = time.perf_counter()
            stats = store.gc()
            rows.append(("delete + gc", time.perf_counter() - t, store.disk_usage()))
            print(f"image {name}, snapshotter {snapshotter}; the container's root is a {mount.type} mount")
            print(f"{'step':32} {'seconds':>8} {'content':>12} {'snapshots':>12} {'total':>12}")
            for step, secs, du in rows:
                print(f"{step:32} {secs:8.3f} {mib(du.content):>12} {mib(du.snapshots):>12} {mib(du.total):>12}")
            print(f"gc removed {stats.removed_content} blobs and {stats.removed_snapshots} snapshots, "
                  f"freed {mib(stats.bytes_freed).strip()}")
            report = store.check()
            print("check:", "ok" if report.ok else report.problems)


if __name__ == "__main__":
    main()
