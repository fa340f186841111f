"""Latency and throughput of usseg against the seed-style pipeline, same run, same machine.

Each test is one interleaved group (harness.py): every pipeline of the group is timed round by
round on the same frames, so the two sides of a ratio see the same machine load. The rows, the
ratios (each naming its reference row and what differs) and the consistency pairs go to the
usseg-bench report through ``results``.
"""

from __future__ import annotations

from .harness import Harness
from .pipelines import collect, latency_group, throughput_group


def _run(group, plan, frames, results) -> dict:
    timing = Harness(group.pipelines, frames.images).run(plan.rounds, plan.warmup)
    out = collect(group, timing, plan)
    out["frames"] = frames.describe()
    results(out)
    return out


def test_end_to_end_and_stages(plan, frames, results):
    """Batch 1, end to end and per stage: the headline pair, then each configuration change."""
    out = _run(latency_group(plan), plan, frames, results)
    rows = {r["id"]: r for r in out["rows"]}
    assert all(r["samples"] == plan.rounds for r in rows.values())
    for ratio in out["ratios"]:
        assert ratio["row"] in rows and ratio["reference"] in rows, ratio
    head = plan.models[0]
    seed_style = rows.get(f"batch1/seed-style:{head.name}/inference")
    if seed_style is not None:  # same network and weights: both pipelines must see the same label maps
        usseg = rows[f"batch1/usseg:{head.name}/inference"]
        gap = max(abs(a - b) for a, b in zip(seed_style["labels"], usseg["labels"]))
        assert gap < 0.005, (seed_style["labels"], usseg["labels"])


def test_end_to_end_batch_throughput(plan, frames, results):
    """Frames/s at batch 1 and in the multi-frame mode (one call for 8 frames)."""
    out = _run(throughput_group(plan), plan, frames, results)
    assert all(r["samples"] == plan.rounds for r in out["rows"])
