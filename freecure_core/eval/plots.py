"""Plots of the protocol's results (matplotlib, imported only here, Agg backend: no display needed)."""
from __future__ import annotations

import math

from .table import to_float


def plot_pc_vs_if(rows, summary: dict, path, title: str = "") -> str:
    """PC (CLIP-T) against IF per method: one small point per (identity, prompt) mean, one large point per
    method mean, an arrow from each method's mean to the next one's (baseline → FreeCure). Writes `path` (PNG)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("FreeCure: the protocol's plot needs matplotlib: pip install matplotlib "
                          "(or run with --no-plot)") from exc
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    means = []
    for i, (method, s) in enumerate(summary.items()):
        c = colours[i % len(colours)]
        groups = {}
        for r in rows:
            if r["method"] == method:
                groups.setdefault((r["identity"], r["prompt_index"]), []).append(r)
        pts = []
        for g in groups.values():
            pc = [to_float(r["pc"]) for r in g if not math.isnan(to_float(r["pc"]))]
            ids = [(to_float(r["if"]) if r["face_found"] in ("1", "True") else 0.0) for r in g if r["face_found"] != ""]
            if pc and ids:
                pts.append((sum(ids) / len(ids), sum(pc) / len(pc)))
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.45, color=c)
        if not (math.isnan(s["pc"]) or math.isnan(s["if"])):
            ax.scatter([s["if"]], [s["pc"]], s=90, color=c, edgecolor="black", label=f"{method} (mean)", zorder=3)
            means.append((s["if"], s["pc"]))
    for (x0, y0), (x1, y1) in zip(means, means[1:]):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 1.2})
    ax.set_xlabel("identity fidelity IF (ArcFace cosine × 100)")
    ax.set_ylabel("prompt consistency PC (CLIP-T)")
    ax.set_title(title or "PC vs IF per method")
    ax.grid(alpha=0.3)
    if means:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
