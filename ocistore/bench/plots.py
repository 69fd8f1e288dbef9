"""PNG plots of a bench run (matplotlib, the ``bench`` extra; imported only when drawing).

Per image: disk by mode (stacked content / snapshots / metadata, ocistore beside
containerd) and latency by step (first step and first create, API, CLI and containerd,
with min-max whiskers). For the node model: total disk against the number of images, per
mode, and the median first-create latency.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["draw"]

_SYSTEMS = (("api", "ocistore"), ("cli", "ocistore CLI"), ("containerd", "containerd"))
_PARTS = (("content", "#4c72b0"), ("snapshots", "#dd8452"), ("metadata", "#55a868"), ("other", "#8c8c8c"))


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()


def draw(results: dict[str, Any], summary: dict[str, Any], out: Path) -> tuple[dict[str, Path], str | None]:
    """Write the PNGs under ``out``; ``({key: path}, None)``, or ``({}, why not)`` without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional (the bench extra), loaded only to draw

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as e:
        return {}, f"matplotlib is not installed ({e}); install the `bench` extra"
    paths: dict[str, Path] = {}
    for label, rows in summary["images"].items():
        fig, (ax_disk, ax_time) = plt.subplots(1, 2, figsize=(12, 4.2))
        _disk_bars(ax_disk, rows, results["modes"])
        _time_bars(ax_time, rows, results["modes"])
        fig.suptitle(f"{label}: disk and latency by mode, ocistore beside containerd")
        fig.tight_layout()
        p = out / f"bench-{_slug(label)}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths[label] = p
    if summary.get("node"):
        fig, (ax_d, ax_t) = plt.subplots(1, 2, figsize=(12, 4.2))
        for mode, by_count in summary["node"].items():
            for system, style in (("api", "-o"), ("containerd", "--s")):
                pts = sorted((int(n), r[system]) for n, r in by_count.items()
                             if r.get(system) and "error" not in r[system])
                if not pts:
                    continue
                who = "ocistore" if system == "api" else "containerd"
                ax_d.plot([n for n, _ in pts], [r["disk"]["total"] / 1e6 for _, r in pts], style,
                          label=f"{mode} ({who})")
                latency = [(r["create_rest"] or r["create_first"])["median"] for _, r in pts]
                ax_t.plot([n for n, _ in pts], latency, style, label=f"{mode} ({who})")
        ax_d.set(xlabel="images on the node", ylabel="disk after the containers (MB)", title="total disk")
        ax_t.set(xlabel="images on the node", ylabel="first create, median of images 2..N (s)",
                 title="first-create latency", yscale="log")
        for ax in (ax_d, ax_t):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"node model: images sharing the {results['node']['base']} base layers")
        fig.tight_layout()
        p = out / "bench-node.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths["node"] = p
    return paths, None


def _disk_bars(ax: Any, rows: dict[str, Any], modes: dict[str, Any]) -> None:
    labels, x = [], 0
    for mode, row in rows.items():
        for system, who in (("api", "ocistore"), ("containerd", "containerd")):
            r = row.get(system)
            if not r:
                continue
            bottom = 0.0
            for part, color in _PARTS:
                v = r["disk"]["create"][part]["median"] / 1e6
                ax.bar(x, v, bottom=bottom, color=color, label=part if x == 0 else None,
                       hatch="//" if system == "containerd" else None, edgecolor="white")
                bottom += v
            labels.append(f"{mode}\n{who}")
            x += 1
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set(ylabel="MB allocated after the first create", title="disk by mode")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _time_bars(ax: Any, rows: dict[str, Any], modes: dict[str, Any]) -> None:
    width, groups = 0.27, []
    for gi, (mode, row) in enumerate(rows.items()):
        step = modes[mode]["step"]
        for si, (system, who) in enumerate(_SYSTEMS):
            r = row.get(system)
            if not r:
                continue
            for ki, key in enumerate((step, "create")):
                s = r.get(key)
                if not s:
                    continue
                pos = gi * 2 + ki + (si - 1) * width
                ax.bar(pos, s["median"], width, color=f"C{si}", label=who if gi == 0 and ki == 0 else None,
                       yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=2)
        groups += [f"{mode}\n{step}", f"{mode}\ncreate"]
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set(ylabel="seconds (median, min-max)", title="latency by step", yscale="log")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
