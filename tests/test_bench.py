"""``ocistore bench`` end to end on a tiny image: JSON, markdown, plots, README section, consistency."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ocistore.bench import BenchConfig, report, run
from ocistore.bench import containerd as ctrd
from ocistore.bench.modes import available
from ocistore.testing.layout import write_layout

BASE = {"etc/os-release": "ID=tiny\n", "bin/sh": "#!" + "x" * 20000, "usr/lib/lib.so": "y" * 70000}
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

HAND = "# Benchmarks\n\nHand-written intro.\n\n## Dedup\n\nOwned by another script.\n"


def _layout(tmp_path: Path) -> Path:
    path = tmp_path / "layout"
    write_layout(path, {"example.com/tiny:1": [BASE, {"opt/app/main": "z" * 30000}]})
    return path


def _disk(sample: dict[str, Any], step: str) -> dict[str, int]:
    disk: dict[str, int] = sample["images"][0]["disk"][step]
    return disk


def test_bench_end_to_end_on_a_tiny_image(tmp_path: Path) -> None:
    cfg = BenchConfig(sources=(str(_layout(tmp_path)),), work=tmp_path / "w", repeat=2, containerd=False,
                      settle=0, node_counts=(1, 3), command="ocistore bench (test)")
    seen: list[tuple[str, str]] = []
    results = run(cfg, lambda image, what, done, total: seen.append((image, what)))
    assert ("tiny:1", "done") in seen and ("node", "done") in seen
    assert results["containerd"]["unavailable"] == "turned off (--no-containerd)"
    lazy_missing = available(["lazy"])["lazy"]
    assert results["modes"]["lazy"]["unavailable"] == lazy_missing

    img = results["images"]["tiny:1"]
    for mode in ("fetch", "pull", "discard"):
        assert len(img["modes"][mode]["api"]) == 2 and len(img["modes"][mode]["cli"]) == 2
        assert not [s for s in img["modes"][mode]["api"] + img["modes"][mode]["cli"] if "error" in s]
        assert img["modes"][mode]["containerd"] == []
    assert ("lazy" in img["modes"]) == (lazy_missing is None)
    for f, p, d in zip(img["modes"]["fetch"]["api"], img["modes"]["pull"]["api"], img["modes"]["discard"]["api"],
                       strict=True):
        fetched, pulled, discarded = _disk(f, "fetch"), _disk(p, "pull"), _disk(d, "pull_discard")
        assert fetched["snapshots"] == 0 < pulled["snapshots"]
        assert pulled["total"] >= fetched["total"]
        assert discarded["total"] < pulled["total"] and discarded["blobs"] < fetched["blobs"]
        assert pulled["blobs"] == fetched["blobs"]  # the same blobs, the same allocation
        # the first create unpacks a fetched image: then it holds what a pull holds
        assert _disk(f, "create")["snapshots"] == _disk(p, "create")["snapshots"]
        for disk in (fetched, pulled, discarded):
            assert disk["total"] == sum(disk[k] for k in ("content", "snapshots", "metadata", "other"))
        assert p["maxrss_kb"] > 0 and p["images"][0]["steps"]["create"] < p["process_wall_s"]
    node = results["node"]
    assert node["counts"] == [1, 3]
    three = node["modes"]["fetch"]["3"]["api"]["images"]
    assert len(three) == 3 and len({i["image"] for i in three}) == 3
    one = node["modes"]["fetch"]["1"]["api"]["images"][-1]["disk"]["create"]["total"]
    assert one < three[-1]["disk"]["create"]["total"]

    out, readme = tmp_path / "out", tmp_path / "README.md"
    readme.write_text(HAND + f"\n{report.BEGIN}\nold generated text\n{report.END}\n\n## Pipeline\n\nAlso kept.\n")
    written = report.write(results, out, readme)
    data = json.loads(written["json"].read_text())
    assert data["command"] == "ocistore bench (test)" and data["machine"]["cpus"] >= 1
    assert data["images"]["tiny:1"]["modes"]["pull"]["api"][0]["images"][0]["steps"]["pull"] > 0
    md = written["markdown"].read_text()
    # issue 14's figures, measured the same way each time: the pull against its two halves
    rows = report.summarize(results)
    fig = rows["pipeline"]["tiny:1"]
    fetch_row = rows["images"]["tiny:1"]["fetch"]["api"]
    halves = (fetch_row["fetch"]["median"], fetch_row["create"]["median"])
    assert fig["pull_over_max"] == pytest.approx(fig["pull"]["median"] / max(halves))
    assert fig["pull_over_sum"] == pytest.approx(fig["pull"]["median"] / sum(halves))
    assert fig["pull_over_ctr"] is None and fig["cli_create_after_pull"]["n"] == 2
    assert f"pull / max(fetch, unpack) {fig['pull_over_max']:.2f}" in md
    assert "### tiny:1" in md and "Which mode should I use" in md and "containerd: skipped" in md
    assert ("not available: " + (lazy_missing or "")) in md if lazy_missing else True
    text = readme.read_text()
    assert text.startswith(HAND) and text.endswith("## Pipeline\n\nAlso kept.\n")
    assert "old generated text" not in text and text.count(report.BEGIN) == 1 and md.strip() in text
    report.splice_readme(readme, "second\n")
    assert readme.read_text().count(report.BEGIN) == 1 and "### tiny:1" not in readme.read_text()
    if HAVE_MPL:
        pngs = {p.name for p in written["plots"]}
        assert pngs == {"bench-tiny-1.png", "bench-node.png"}
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written["plots"])
        assert "](bench-tiny-1.png)" not in md or (out / "bench-tiny-1.png").exists()
    else:
        pytest.skip("matplotlib is not installed (the bench/test extra): the PNG checks did not run")

    # ratios are ocistore/containerd pair by pair: with a containerd column at twice the times
    fake = copy.deepcopy(results)
    for mode in ("fetch", "pull"):
        samples = copy.deepcopy(fake["images"]["tiny:1"]["modes"][mode]["api"])
        for s in samples:
            for one_img in s["images"]:
                one_img["steps"] = {k: 2 * v for k, v in one_img["steps"].items()}
        fake["images"]["tiny:1"]["modes"][mode]["containerd"] = samples
    summary = report.summarize(fake)["images"]["tiny:1"]
    for mode in ("fetch", "pull"):
        row = summary[mode]
        for step, ratio in row["ratios"]["time"].items():
            assert ratio == pytest.approx(row["api"][step]["median"] / row["containerd"][step]["median"])
            assert ratio == pytest.approx(0.5)
        assert row["ratios"]["disk"]["create"]["total"] == pytest.approx(1.0)
    assert "ratios" not in summary["discard"]  # no containerd counterpart
    assert report.summarize(fake)["pipeline"]["tiny:1"]["pull_over_ctr"] == pytest.approx(0.5)


@pytest.mark.containerd
def test_bench_beside_containerd_measures_both_the_same_way(tmp_path: Path) -> None:
    why = ctrd.unavailable()
    if why:
        pytest.skip(f"containerd cannot run here: {why}")
    work = Path("/tmp") / f"obt-{tmp_path.name[-12:]}"  # short: containerd's socket path
    try:
        cfg = BenchConfig(sources=(str(_layout(tmp_path)),), work=work, modes=("fetch", "pull"), repeat=1,
                          cli=False, settle=0, node_counts=())
        results = run(cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = report.summarize(results)["images"]["tiny:1"]
    for mode, step in (("fetch", "fetch"), ("pull", "pull")):
        samples = results["images"]["tiny:1"]["modes"][mode]["containerd"]
        assert samples and "error" not in samples[0], samples
        row = summary[mode]
        ratio = row["ratios"]["time"][step]
        assert ratio == pytest.approx(row["api"][step]["median"] / row["containerd"][step]["median"])
        # the same blobs on the same filesystem, measured by the same walk
        assert row["ratios"]["disk"][step]["blobs"] == pytest.approx(1.0, abs=0.01)
        c_disk = samples[0]["images"][0]["disk"]
        assert (c_disk["create"]["snapshots"] > 0) and c_disk[step]["blobs"] > 0
