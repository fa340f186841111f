"""benchmark.md: the report's JSON as Markdown tables, the like-for-like headline first.

"-" marks a missing value (never a made-up zero); a p99 shown as "-" comes with the number of
timed calls it would have come from.
"""

from __future__ import annotations

import math
from typing import Any

from .figures import CONSISTENCY_TOLERANCE, MIN_P99_SAMPLES, POSTPROCESS_TARGET_MS
from .seed_style import SEED_HEADLINE_MS
from .weights import weights_line

CLASSES = ("MID", "VTB", "EPI")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def shares(values: list[float] | None) -> str:
    if not values:
        return "-"
    return ", ".join(f"{name} {100 * v:.2f} %" for name, v in zip(CLASSES, values[1:]))


def table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in lines]


def machine_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = f"load average (1 min) {fmt(m.get('load_start'))} at the start, {fmt(m.get('load_end'))} at the end"
    groups = report.get("groups", {})
    during = [v for g in groups.values() for v in (g.get("load_before"), g.get("load_after")) if v is not None]
    if during:
        load += f", {fmt(min(during))}-{fmt(max(during))} around the timed groups (the benchmark itself keeps the cores busy)"
    return f"{m.get('description', '-')}; device {report.get('plan', {}).get('device', '-')}; {load}"


def _rows(report: dict[str, Any], group: str) -> list[dict[str, Any]]:
    return [r for r in report["rows"] if r["group"] == group]


def _label(r: dict[str, Any]) -> str:
    pipeline = r.get("pipeline") or (f"{r['impl']}:{r['model']}" if r.get("model") else r["impl"])
    variant = r.get("variant") or ""
    return pipeline + (f" [{variant}]" if variant and r["stage"] != "stream" else "")


def _p99(r: dict[str, Any]) -> str:
    return fmt(r.get("p99_ms")) if r.get("p99_ms") is not None else f"- ({r.get('samples', '?')} calls)"


def header(report: dict[str, Any]) -> list[str]:
    plan, out = report.get("plan", {}), []
    out.append(f"Command: `{report.get('command', '-')}`")
    out.append("")
    out.append(f"Machine: {machine_line(report)}")
    f = plan.get("frames")
    if f:
        out += ["", (f"Frames: {f['count']} phantom frames {f['height']}x{f['width']} (seed {f['seed']}), cycled "
                     f"through {plan.get('rounds')} timed rounds per row after {plan.get('warmup')} warm-up rounds; "
                     f"every row of a group is timed on the same frame in each round, the pipelines in a rotating "
                     f"order. Phantom ground truth of these frames: {shares(f.get('truth_shares'))} of the pixels.")]
    models = report.get("models", {})
    if models:
        out += ["", "Weights timed (label maps: class shares the network gave on the timed frames):"]
        labels = _model_labels(report)
        for name, m in models.items():
            out.append(f"- `{name}` ({m['network']} {m['height']}x{m['width']}, {m['recipe']} recipe): "
                       f"{weights_line(m['weights'])}; label maps {labels.get(name, '-')}")
    return out


def _model_labels(report: dict[str, Any]) -> dict[str, str]:
    found = {}
    for r in report["rows"]:
        if r["stage"] == "inference" and r.get("labels") and not r.get("variant") and r.get("model"):
            found.setdefault(r["model"], shares(r["labels"]))
    return found


def headline(report: dict[str, Any]) -> list[str]:
    by_id = {r["id"]: r for r in report["rows"]}
    heads = [x for x in report["ratios"] if x.get("headline") and x["value"] is not None]
    if not heads:
        return ["No like-for-like pair in this run (the seed-style rows need a PyTorch checkpoint)."]
    out = []
    for h in heads:
        row, ref = by_id[h["row"]], by_id[h["reference"]]
        out.append(f"**{times(h['value'])}**: usseg runs the {row['network']} ({row['input']}, {row['recipe']} "
                   f"recipe, {row['precision']}) end to end in {fmt(row['median_ms'])} ms per frame against "
                   f"{fmt(ref['median_ms'])} ms for the seed-style pipeline with the same weights, on the same "
                   f"{row['frames']} timed frames ({h['differs']}).")
        stage_lines = []
        for stage in ("preprocess", "inference", "postprocess", "end-to-end"):
            a = by_id.get(h["reference"].replace("/end-to-end", f"/{stage}"))
            b = by_id.get(h["row"].replace("/end-to-end", f"/{stage}"))
            if a and b:
                stage_lines.append([stage, f"{a['provider']}", fmt(a["median_ms"]), f"{b['provider']}",
                                    fmt(b["median_ms"]), times(a["median_ms"] / b["median_ms"])])
        out += [""] + table(["stage", "seed-style", "ms", "usseg", "ms", "usseg vs seed-style"], stage_lines)
    return out


def latency_table(report: dict[str, Any], group: str) -> list[str]:
    if not _rows(report, group):
        return []
    flagged = {c["end_to_end_row"] for c in report["consistency"] if not c["ok"]}
    lines = [[_label(r), r["stage"], r["provider"], r["precision"], str(r["batch"]),
              fmt(r["median_ms"]) + (" (flagged: not the sum of its stages)" if r["id"] in flagged else ""), _p99(r),
              str(r["frames"]), fmt(r["fps"], 1)] for r in _rows(report, group)]
    return table(["row", "stage", "provider", "precision", "frames per call", "median ms / frame", "p99 ms / frame",
                  "frames timed", "frames/s"], lines)


def ratio_table(report: dict[str, Any], group: str, skip_headline: bool = True) -> list[str]:
    by_id = {r["id"]: r for r in report["rows"]}
    lines = []
    for x in report["ratios"]:
        if not x["row"].startswith(group + "/") or (skip_headline and x.get("headline")):
            continue
        row, ref = by_id.get(x["row"]), by_id.get(x["reference"])
        lines.append([x["differs"], "-" if row is None else f"{_label(row)} {row['stage']}", fmt(x["row_ms"]),
                      "-" if ref is None else f"{_label(ref)} {ref['stage']}", fmt(x["reference_ms"]),
                      times(x["value"]) + (f" ({x['note']})" if x.get("note") else "")])
    return table(["what differs", "row", "ms", "reference row", "ms", "speed-up"], lines) if lines else []


def postprocess_target(report: dict[str, Any]) -> str | None:
    """Issue 30's target, read on the usseg row of the trained network's label maps."""
    rows = [r for r in _rows(report, "postprocess-trained") if r["impl"] == "usseg"]
    if not rows:
        return None
    r = rows[0]
    met = r["median_ms"] <= POSTPROCESS_TARGET_MS
    return (f"Target: post-processing <= {POSTPROCESS_TARGET_MS:g} ms per frame of a trained network's label "
            f"maps, one core: **{fmt(r['median_ms'], 3)} ms, {'met' if met else 'missed'}** (`{r['model']}` at "
            f"{r['input']}, median of {r['samples']} calls, interleaved with the seed-style rules; the machine "
            f"line gives the load).")


def postprocess_lines(report: dict[str, Any]) -> list[str]:
    """The target line, then each post-processing group's rows and ratio (trained maps first)."""
    target = postprocess_target(report)
    out = [target, ""] if target else []
    for group in ("postprocess-trained", "postprocess-1core"):
        rows = latency_table(report, group)
        if rows:
            out += rows + [""] + ratio_table(report, group, skip_headline=False) + [""]
    return out


def consistency_table(report: dict[str, Any]) -> list[str]:
    lines = []
    for c in report["consistency"]:
        s = c["stages_ms"]
        lines.append([c["pipeline"], fmt(s.get("preprocess")), fmt(s.get("inference")), fmt(s.get("postprocess")),
                      fmt(c["sum_ms"]), fmt(c["end_to_end_ms"]), f"{100 * c['deviation']:+.1f} %",
                      "yes" if c["ok"] else "**NO: flagged**", fmt(c.get("median_round_sum_ms"))])
    if not lines:
        return []
    return table(["pipeline", "preprocess", "inference", "postprocess", "sum of stage medians", "end to end",
                  "end to end vs sum", f"within {100 * CONSISTENCY_TOLERANCE:.0f} %",
                  "median of per-round stage sums"], lines) + [
        "", ("The check adds the stage medians, as the table above reads. The last column adds each round's "
             "three stages first: where it matches the end-to-end median but the sum of medians does not, the "
             "stage times are skewed (a busy machine preempting some calls), not missing work.")]


def stream_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for r in _rows(report, "stream"):
        source = "as fast as it goes" if not r.get("source_fps") else f"{r['source_fps']:g} frames/s"
        lines.append([r.get("pipeline", "-"), r["policy"], source, f"{r['processed']} of {r['captured']}",
                      str(r["dropped"]), fmt(r["fps"], 1), fmt(r["median_ms"], 1), _p99(r)])
    return table(["model", "policy", "source", "processed", "dropped", "frames/s", "latency p50 ms",
                  "latency p99 ms"], lines) if lines else []


def training_lines(report: dict[str, Any]) -> list[str]:
    rows = [r for r in report["rows"] if r["id"].startswith("pytest/")]
    lines = []
    for r in rows:
        shown = r.get("published", True)
        variant = r["variant"] or "-"
        if r.get("provider") and r["provider"] != "cpu":  # e.g. "cpu x2": processes under torchrun
            variant += f" ({r['provider']})"
        per_epoch = r.get("epoch_frames_per_s")
        lines.append([r["group"], r["impl"], variant, str(r["batch"]),
                      fmt(r["median_ms"]) if shown else "-", _p99(r) if shown else "-", str(r["frames"]),
                      fmt(r["fps"], 1) if shown else r.get("not_published", "-"),
                      fmt(per_epoch, 1) if shown and per_epoch is not None else "-"])
    return table(["what", "impl", "variant", "batch", "median ms / frame", "p99 ms / frame", "frames timed",
                  "frames/s", "frames/s per epoch (steady)"], lines) if lines else []


def markdown(report: dict[str, Any], full: bool = True) -> str:
    """The whole report; ``full=False`` leaves out the per-row latency table and the training cost
    (the README's excerpt: ``python -m usseg.benchmarks.tables OUT/benchmark.json``)."""
    level = "###" if full else "####"
    out = header(report) + ["", f"{level} Headline: usseg vs the seed-style pipeline, like for like", ""]
    out += headline(report)
    sections = [
        ("### Latency at batch 1, per frame", latency_table(report, "batch1") if full else []),
        ("### What each change buys (each row against the row it changes; same group, same frames)",
         ratio_table(report, "batch1")),
        ("### Internal consistency: end to end against the sum of its stages, same run", consistency_table(report)),
        ("### Throughput: batch 1 and the multi-frame mode", latency_table(report, "multi") + [""]
         + ratio_table(report, "multi")),
        ("### Streaming (policy all: sustained frames/s; policy latest at the source's rate: latency and drops)",
         stream_lines(report)),
        ("### Post-processing alone, one core", postprocess_lines(report)),
        ("### Training cost (pytest-benchmark rounds, one benchmark after the other, not interleaved)", (training_lines(report) + [""]
                                                         + ratio_table(report, "pytest", skip_headline=False))
         if full else []),
    ]
    for title, body in sections:
        if any(line.strip() for line in body) and "|" in "".join(body):
            out += ["", title.replace("###", level), ""] + body
    mem = report.get("memory")
    if mem:
        out += ["", (f"Memory: {fmt(mem.get('rss_mb'), 0)} MB RSS ({fmt(mem.get('peak_mb'), 0)} MB peak, "
                     f"{fmt(mem.get('growth_mb'), 1)} MB growth over 40 frames) for a process running "
                     f"`{mem.get('model')}` on the CPU.")]
    out += ["", "Notes:",
            (f"- p99: nearest-rank 99th percentile of at least {MIN_P99_SAMPLES} timed calls; \"-\" with the number "
             f"of calls where there were fewer. Medians and p99 are per frame."),
            "- frames/s: frames timed / the time they took (throughput at that batch), not 1000 / median.",
            ("- speed-up: the reference row's median / the row's median (> 1: the row is faster); a ratio is only "
             "taken between rows of the same interleaved group, and names what differs."),
            (f"- The seed README's {SEED_HEADLINE_MS / 1000:.2f} s per image is a GTX 1050 Ti figure: a fixed "
             "reference line on the chart, not measured here, and no ratio is taken against it.")]
    out += [f"- {n}" for n in report.get("notes", [])]
    flagged = [c["pipeline"] for c in report["consistency"] if not c["ok"]]
    if flagged:
        out.append(f"- **Flagged**: end to end and the sum of the stages differ by more than "
                   f"{100 * CONSISTENCY_TOLERANCE:.0f} % for {', '.join(flagged)}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    if len(sys.argv) != 2:
        sys.exit("usage: python -m usseg.benchmarks.tables OUT/benchmark.json   (prints the README excerpt)")
    print(markdown(json.loads(Path(sys.argv[1]).read_text()), full=False), end="")
