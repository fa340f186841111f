"""benchmark.png: end-to-end median per frame at batch 1, one bar per pipeline, log scale.

Layout rules: the title and the machine caption sit outside the axes (title above, caption below
the x-axis label, wrapped), values are written at the bar ends, and the seed's 70 ms reference
line is named in the legend rather than written over the bars.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .seed_style import SEED_HEADLINE_MS

COLOURS = {"seed-style": "#c0504d", "usseg": "#4f81bd", "usseg-graph": "#9bbb59"}


def bar_chart(report: dict[str, Any], path: Path) -> tuple[float, float]:
    """Writes the chart to ``path``; returns its x range (ms), which always shows the seed's 70 ms line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .tables import machine_line

    rows = [r for r in report["rows"] if r["group"] == "batch1" and r["stage"] == "end-to-end"]
    if not rows:
        rows = [r for r in report["rows"] if r["stage"] == "end-to-end"]
    rows.sort(key=lambda r: -r["median_ms"])
    speedups: dict[str, dict] = {}
    for x in report["ratios"]:  # the first ratio of a row: against the row it changes
        if x["value"] is not None:
            speedups.setdefault(x["row"], x)
    # three stacked axes: title and legend, the bars, the machine caption; none draws over another
    fig, (top, ax, bottom) = plt.subplots(3, 1, figsize=(10, 0.5 * max(len(rows), 1) + 3.0), layout="constrained",
                                          height_ratios=(0.6, 0.5 * max(len(rows), 1), 0.5))
    names = [r.get("pipeline", r["id"]) for r in rows]
    kinds = [n.split(":")[0] for n in names]
    ax.barh(range(len(rows)), [r["median_ms"] for r in rows], color=[COLOURS.get(k, "#7f7f7f") for k in kinds])
    ax.set_yticks(range(len(rows)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    for i, r in enumerate(rows):
        text = f" {r['median_ms']:.1f} ms"
        x = speedups.get(r["id"])
        if x is not None:
            text += f"  ({x['value']:.2f}x vs {x['reference'].split('/')[1]})"
        ax.text(r["median_ms"], i, text, va="center", fontsize=8, zorder=3,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.9})
    if rows:
        values = [r["median_ms"] for r in rows] + [SEED_HEADLINE_MS]  # the reference line stays in view
        ax.set_xlim(min(values) / 2, max(values) * 6)  # room for the labels at the bar ends
    ax.axvline(SEED_HEADLINE_MS, color="black", linestyle="--", linewidth=1, zorder=1)
    legend = [Patch(color=c, label=k) for k, c in COLOURS.items() if k in kinds]
    legend.append(plt.Line2D([], [], color="black", linestyle="--",
                             label="seed README: 70 ms per image, GTX 1050 Ti (not measured here)"))
    top.axis("off")
    top.set_title("usseg-bench: end to end per frame at batch 1 (same run, same frames)", fontsize=11)
    top.legend(handles=legend, loc="center", ncols=2, fontsize=8, frameon=False)
    ax.set_xlabel("median end-to-end time per frame, ms (log scale)")
    bottom.axis("off")
    bottom.text(0, 1, "\n".join(textwrap.wrap(machine_line(report), 120)), fontsize=7, va="top", ha="left",
                transform=bottom.transAxes)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ax.get_xlim()
