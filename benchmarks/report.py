"""Turn pytest-benchmark JSON into the usseg-bench Markdown table and bar chart.

Every row is per frame; "vs seed-style" is the seed-style median of the same stage divided by the
row's median (>1 means usseg is faster), measured in the same run on the same machine; "vs 0.07 s"
compares with the seed README's headline (a GTX 1050 Ti figure, a fixed reference line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .seed_style import SEED_HEADLINE_MS

STAGES = ("preprocess", "inference", "postprocess", "end-to-end")


@dataclass(frozen=True)
class Row:
    stage: str
    impl: str
    provider: str
    precision: str
    batch: int
    variant: str
    pair: str          # compared with the seed-style row of the same stage and pair
    median_ms: float   # per frame
    p99_ms: float      # per frame
    rounds: int
    info: dict = field(default_factory=dict, compare=False)  # the benchmark's extra_info

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("nan")


def _p99(data: list[float]) -> float:
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def load_rows(raw: dict) -> list[Row]:
    rows = []
    for b in raw.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "stage" not in info:
            continue
        frames = max(1, int(info.get("frames", 1)))
        stats = b["stats"]
        data = stats.get("data") or [stats["median"]]
        rows.append(Row(info["stage"], info["impl"], str(info.get("provider", "cpu")), info.get("precision", "fp32"),
                        int(info.get("batch", 1)), str(info.get("recipe", "")), str(info.get("pair", "")),
                        stats["median"] * 1e3 / frames, _p99(data) * 1e3 / frames, int(stats.get("rounds", len(data))),
                        dict(info)))
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(rows, key=lambda r: (order.get(r.stage, 99), r.impl != "seed-style", r.median_ms))


def baselines(rows: list[Row]) -> dict[tuple[str, str], float]:
    return {(r.stage, r.pair): r.median_ms for r in rows if r.impl == "seed-style"}


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def markdown(rows: list[Row], machine: str) -> str:
    base = baselines(rows)
    lines = [f"Machine: {machine}", "",
             "| stage | impl | provider | precision | batch | variant | median ms | p99 ms | frames/s | vs seed-style | vs 0.07 s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = base.get((r.stage, r.pair))
        vs_seed = None if ratio is None else ratio / r.median_ms
        vs_headline = SEED_HEADLINE_MS / r.median_ms if r.stage == "end-to-end" else None
        lines.append(f"| {r.stage} | {r.impl} | {r.provider} | {r.precision} | {r.batch} | {r.variant or '-'} | "
                     f"{fmt(r.median_ms)} | {fmt(r.p99_ms)} | {fmt(r.fps, 1)} | "
                     f"{'-' if vs_seed is None else fmt(vs_seed) + 'x'} | "
                     f"{'-' if vs_headline is None else fmt(vs_headline) + 'x'} |")
    for r in rows:
        if r.stage == "stream" and "latency_ms_p50" in r.info:
            i = r.info
            lines.append(f"\nStream ({r.variant}): {i['processed']} of {i['captured']} frames processed, "
                         f"{fmt(i['fps'], 1)} frames/s, capture-to-result latency p50 {fmt(i['latency_ms_p50'], 1)} ms, "
                         f"p99 {fmt(i['latency_ms_p99'], 1)} ms, dropped {i['dropped']}.")
    lines += ["", "Per frame. 'vs seed-style': the seed-style median of the same stage / this median, same run, "
              "same machine (> 1 = faster). 'vs 0.07 s': the seed README's 70 ms per image (GTX 1050 Ti) / this median."]
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[Row], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.stage}: {r.impl} {r.precision}{' ' + r.variant if r.variant else ''}{' b' + str(r.batch) if r.batch > 1 else ''}"
              for r in rows]
    colours = ["#c0504d" if r.impl == "seed-style" else "#4f81bd" if r.impl == "usseg" else "#9bbb59" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [r.median_ms for r in rows], color=colours)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(SEED_HEADLINE_MS, color="black", linestyle="--", linewidth=1)
    ax.text(SEED_HEADLINE_MS, -0.8, " seed headline 70 ms", fontsize=8)
    ax.set_xlabel("median ms per frame (log scale); red = seed-style, blue = usseg, green = bare ONNX Runtime")
    ax.set_title(machine, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(raw_json: Path, out_dir: Path, machine: str) -> tuple[Path, Path, list[Row]]:
    rows = load_rows(json.loads(raw_json.read_text()))
    md, png = out_dir / "benchmark.md", out_dir / "benchmark.png"
    md.write_text(markdown(rows, machine))
    if rows:
        bar_chart(rows, png, machine)
    return md, png, rows
