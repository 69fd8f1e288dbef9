"""One ocistore scenario in a fresh process: ``python -m ocistore.bench.scenario JSON``.

The parent (``ocistore.bench.runner``) starts it for every image, mode and repetition on an
empty root, and reads its peak RSS and CPU from ``wait4``. It imports everything the
operations load lazily before the first timed step (an embedding program pays that once),
runs the mode's first step, measures the root, creates the first container (unpacking
lazily where needed), measures again, and prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

__all__ = ["main"]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str]) -> int:
    """Run the scenario described by the JSON object in ``argv[0]``; print the result."""
    spec: dict[str, Any] = json.loads(argv[0])
    t0 = time.perf_counter()
    import ocistore.archive  # noqa: PLC0415 - loaded before timing, as an embedder would
    import ocistore.metadata.gc  # noqa: PLC0415
    import ocistore.mount  # noqa: PLC0415
    import ocistore.remotes  # noqa: PLC0415
    import ocistore.snapshots  # noqa: PLC0415
    import ocistore.transfer.containers  # noqa: PLC0415
    import ocistore.transfer.pull  # noqa: PLC0415
    import ocistore.transfer.unpack  # noqa: F401, PLC0415
    from ocistore.bench import measure, modes  # noqa: PLC0415
    from ocistore.store import Store  # noqa: PLC0415

    res: dict[str, Any] = {"import_s": time.perf_counter() - t0, "images": []}
    mode = modes.get(spec["mode"])
    t1 = time.perf_counter()
    store = Store(spec["root"], plain_http=bool(spec.get("plain_http")))
    res["open_s"] = time.perf_counter() - t1
    parts = measure.ocistore_parts(spec["root"])
    pause = float(spec.get("settle", 0))
    try:
        for i, ref in enumerate(spec["refs"]):
            one: dict[str, Any] = {"ref": ref, "steps": {}, "cpu": {}, "disk": {}}
            measure.settle(pause)
            c0, t2 = _cpu(), time.perf_counter()
            img = mode.store_call(store, ref)
            one["steps"][mode.step] = time.perf_counter() - t2
            one["cpu"][mode.step] = _cpu() - c0
            one["disk"][mode.step] = measure.root_usage(spec["root"], parts)
            measure.settle(pause)
            c0, t2 = _cpu(), time.perf_counter()
            store.containers.create(f"bench-{i}", img.name)
            one["steps"]["create"] = time.perf_counter() - t2
            one["cpu"]["create"] = _cpu() - c0
            one["disk"]["create"] = measure.root_usage(spec["root"], parts)
            one["image"] = img.name
            res["images"].append(one)
        res["check_ok"] = store.check().ok
    finally:
        store.close()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
