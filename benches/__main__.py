"""``python -m benches``: the repository's own ``ocistore bench`` run on the fixture corpus.

Everything ``ocistore bench`` takes, with defaults for this repository: the sources are the
fixture corpus (``../shared/fixtures/corpus``), or, when a layout built with
``build-images --big`` is given (``--big-layout`` or ``$OCISTORE_BENCH_BIG``), that layout
(it holds the small corpus and ``ml:big``); the images are debian:gzip, debian:zstd,
app:layers and ml:big; the report goes to ``benches/bench/`` and its section of
``benches/README.md`` is rewritten. One command reproduces every figure and plot there:

    sudo python -m benches --big-layout /var/tmp/obench/images --loop-ext4 8
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from ocistore.bench import report, runner  # noqa: E402
from ocistore.cli.bench import add_arguments, config_from  # noqa: E402
from ocistore.cli.progress import ProgressPrinter  # noqa: E402
from ocistore.transfer.progress import ProgressEvent  # noqa: E402

FIXTURES = Path(os.environ.get("OCISTORE_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures")
IMAGES = ["debian:gzip", "debian:zstd", "app:layers", "ml:big"]


def _has(layout: Path, tag: str) -> bool:
    try:
        index = json.loads((layout / "index.json").read_text())
    except OSError:
        return False
    return any(m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag for m in index["manifests"])


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benches", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_BENCH_BIG"),
                    help="an OCI layout from `build-images --big` (holds the corpus and ml:big)")
    ap.set_defaults(out=str(HERE / "bench"), readme=str(HERE / "README.md"), images=None)
    a = ap.parse_args()
    if a.from_json:
        written = report.write(json.loads(Path(a.from_json).read_text()), Path(a.out),
                               Path(a.readme) if a.readme else None)
        print(f"rendered {written['markdown']}, {len(written['plots'])} plots and the section of {a.readme}")
        return 0
    if not a.sources:
        big = Path(a.big_layout) if a.big_layout else None
        if big is not None and _has(big, "ml:big"):
            a.sources = [str(big)]
        else:
            if big is not None:
                print(f"[bench] {big} has no ml:big; using the small corpus", file=sys.stderr)
            a.sources = [str(FIXTURES / "corpus")]
        if a.images is None:
            a.images = [i for i in IMAGES if _has(Path(a.sources[0]), i)]
    a.images = a.images or []
    cfg = config_from(a, "python -m benches " + shlex.join(sys.argv[1:]))
    printer = ProgressPrinter(sys.stderr, tty=sys.stderr.isatty())

    def log(image: str, what: str, done: int, total: int) -> None:
        printer(ProgressEvent(ref=image, digest="", kind="image", status=what, offset=done, total=total))

    try:
        results = runner.run(cfg, log)
    finally:
        printer.close()
    written = report.write(results, Path(a.out), Path(a.readme) if a.readme else None)
    print(f"wrote {written['json']}, {written['markdown']}, {len(written['plots'])} plots"
          + (f" (plots skipped: {written['plots_skipped']})" if written["plots_skipped"] else "")
          + (f"; section of {a.readme}" if a.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
