"""The usseg-bench report's logic on fixed inputs: p99 rule, ratio pairing, consistency flag,
training-throughput publication, Markdown and chart."""

import numpy as np
import pytest

from usseg.benchmarks import tables
from usseg.benchmarks.chart import bar_chart
from usseg.benchmarks.figures import (
    MIN_P99_SAMPLES,
    consistency,
    median,
    p99,
    p99_note,
    speedup,
    summarise,
)
from usseg.benchmarks.report import (
    Row,
    build,
    check_consistency,
    load_rows,
    pair_ratios,
    publishable,
    rows_from_pytest,
    write,
)
from usseg.benchmarks.seed_style import SEED_HEADLINE_MS, pad_or_crop
from usseg.benchmarks.tables import markdown


# -- figures -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, expected", [
    ([3.0], 3.0),                      # one value
    ([1.0, 9.0, 2.0], 2.0),            # odd count: the middle one
    ([4.0, 1.0, 3.0, 2.0], 2.5),       # even count: mean of the middle two
])
def test_median(values, expected):
    assert median(values) == expected


def test_p99_needs_200_calls_and_is_the_nearest_rank():
    values = list(range(1, 201))                      # 200 calls: 1..200 ms
    assert p99(values) == 198                         # ceil(0.99 * 200) = 198th smallest
    assert p99(list(range(1, 1001))) == 990
    assert p99(values[:-1]) is None                   # 199 calls: it would be the maximum's neighbour
    assert p99_note(199) == f"199 timed calls (< {MIN_P99_SAMPLES}): no p99"
    assert p99_note(200) is None


def test_summary_is_per_frame_and_frames_per_second_is_the_mean_rate():
    s = summarise([40.0, 40.0, 80.0], batch=4)        # 3 calls of 4 frames: 160 ms for 12 frames
    assert (s.median_ms, s.samples, s.frames) == (10.0, 3, 12)
    assert s.fps == pytest.approx(12 / 0.160)          # not 1000 / median (= 100)
    assert s.p99_ms is None and "3 timed calls" in s.p99_note
    with pytest.raises(ValueError, match="batch"):
        summarise([1.0], batch=0)


@pytest.mark.parametrize("e2e, stages, ok", [
    (274.0, {"preprocess": 131.8, "inference": 129.8, "postprocess": 12.8}, True),   # equal
    (300.0, {"preprocess": 131.8, "inference": 129.8, "postprocess": 12.8}, True),   # +9.5 %
    (515.6, {"preprocess": 131.8, "inference": 129.8, "postprocess": 12.8}, False),  # the old README row: +88 %
    (200.0, {"preprocess": 131.8, "inference": 129.8, "postprocess": 12.8}, False),  # -27 %
])
def test_consistency_flags_more_than_15_percent(e2e, stages, ok):
    c = consistency(e2e, stages)
    assert c["sum_ms"] == pytest.approx(274.4)
    assert c["deviation"] == pytest.approx(e2e / 274.4 - 1, abs=1e-4)
    assert c["ok"] is ok


def test_speedup_is_reference_over_row_and_missing_stays_missing():
    assert speedup(260.0, 26.0) == pytest.approx(10.0)
    assert speedup(None, 26.0) is None and speedup(260.0, None) is None and speedup(260.0, 0.0) is None


# -- rows, ratios, consistency -----------------------------------------------------------------------------
def row(id_, median_ms, stage="end-to-end", impl="usseg", group="batch1", **extra):
    return Row(id=id_, group=group, stage=stage, impl=impl, provider="cpu", precision="fp32", batch=1, model="m",
               network="seed UNet", input="480x640", recipe="seed", variant="", median_ms=median_ms, p99_ms=None,
               p99_note="30 timed calls (< 200): no p99", samples=30, frames=30, fps=1000 / median_ms, info=extra)


def test_ratios_pair_with_their_named_reference_and_say_what_differs():
    rows = [row("batch1/seed-style:m/end-to-end", 270.0, impl="seed-style"), row("batch1/usseg:m/end-to-end", 90.0),
            row("batch1/usseg:lite/end-to-end", 30.0)]
    specs = [{"row": "batch1/usseg:m/end-to-end", "reference": "batch1/seed-style:m/end-to-end",
              "differs": "engineering only", "headline": True},
             {"row": "batch1/usseg:lite/end-to-end", "reference": "batch1/usseg:m/end-to-end",
              "differs": "network: seed UNet -> lite UNet"},
             {"row": "batch1/usseg:lite/end-to-end", "reference": "batch1/usseg:gone/end-to-end", "differs": "x"}]
    out = pair_ratios(rows, specs)
    assert [r["value"] for r in out[:2]] == [pytest.approx(3.0), pytest.approx(3.0)]
    assert out[1]["reference"] == "batch1/usseg:m/end-to-end" and out[1]["reference_ms"] == 90.0
    assert out[2]["value"] is None and out[2]["note"] == "reference not in this run"   # never a made-up figure
    with pytest.raises(ValueError, match="what differs"):
        pair_ratios(rows, [{"row": rows[1].id, "reference": rows[0].id, "differs": ""}])


def test_consistency_is_checked_per_pipeline_from_its_own_rows():
    rows = [row("g/p/end-to-end", 515.6), row("g/p/preprocess", 131.8, "preprocess"),
            row("g/p/inference", 129.8, "inference"), row("g/p/postprocess", 12.8, "postprocess"),
            row("g/q/end-to-end", 10.0)]   # q has no stage rows: not checked
    specs = [{"pipeline": "p", "end_to_end": "g/p/end-to-end",
              "stages": {s: f"g/p/{s}" for s in ("preprocess", "inference", "postprocess")}},
             {"pipeline": "q", "end_to_end": "g/q/end-to-end",
              "stages": {s: f"g/q/{s}" for s in ("preprocess", "inference", "postprocess")}}]
    out = check_consistency(rows, specs)
    assert [c["pipeline"] for c in out] == ["p"]
    assert out[0]["ok"] is False and out[0]["end_to_end_ms"] == 515.6


def bench(name, stage, impl, seconds, rounds=5, frames=1, group=None, **info):
    return {"name": name, "group": group or stage, "stats": {"median": seconds, "rounds": rounds,
                                                             "data": [seconds] * rounds},
            "extra_info": {"stage": stage, "impl": impl, "frames": frames, "batch": frames, **info}}


def test_pytest_rows_pair_with_the_seed_style_row_of_their_stage_and_pair():
    raw = {"benchmarks": [
        bench("t1", "train step", "seed-style", 0.012, pair="tiny"),
        bench("t2", "train step", "usseg", 0.004, pair="tiny", differs="HD term: MONAI -> usseg"),
        bench("d1", "train step", "seed-style", 0.080, frames=4, pair="demo"),
        bench("d2", "train step", "usseg", 0.040, frames=4, pair="demo"),
        bench("x", "train data", "usseg", 0.001),                    # no seed-style row: no ratio
        {"name": "not ours", "stats": {"median": 1.0}, "extra_info": {}},
    ]}
    rows, specs = rows_from_pytest(raw)
    assert [r.id for r in rows] == ["pytest/t1", "pytest/t2", "pytest/d1", "pytest/d2", "pytest/x"]
    assert rows[2].median_ms == pytest.approx(20.0) and rows[2].frames == 20      # per frame of 4-frame calls
    assert all(r.p99_ms is None for r in rows)                                    # 5 rounds: no p99
    values = {s["row"]: v["value"] for s, v in zip(specs, pair_ratios(rows, specs))}
    assert values == {"pytest/t2": pytest.approx(3.0), "pytest/d2": pytest.approx(2.0)}
    assert specs[0]["differs"] == "HD term: MONAI -> usseg"


@pytest.mark.parametrize("load, ok", [(0.3, True), (1.2, False), (None, False)])
def test_torchrun_throughput_is_published_only_from_an_idle_start(load, ok):
    r = row("pytest/ddp", 100.0, group="train", load_before=load, idle_load=0.5)
    shown, why = publishable(r)
    assert shown is ok and (why is None) is ok
    assert publishable(row("pytest/ddp", 100.0, load_before=0.4, idle_load=0.3))[0] is False  # the row's own limit
    assert publishable(row("batch1/x", 1.0, load_before=5.0)) == (True, None)   # latency rows carry their load


# -- the whole report on fixed results ----------------------------------------------------------------------
def group_result():
    def r(pipeline, stage, ms, impl="usseg", variant="", labels=None):
        return {"id": f"batch1/{pipeline}/{stage}", "group": "batch1", "pipeline": pipeline, "stage": stage,
                "impl": impl, "provider": "cpu", "precision": "fp32", "batch": 1, "model": "seed-480x640-seed",
                "network": "seed UNet", "input": "480x640", "recipe": "seed", "variant": variant,
                "median_ms": ms, "p99_ms": None, "p99_note": "30 timed calls (< 200): no p99", "samples": 30,
                "frames": 30, "fps": 1000 / ms, "weights": {"trained": True}, "labels": labels}
    ss, us = "seed-style:seed-480x640-seed", "usseg:seed-480x640-seed"
    rows = [r(ss, "end-to-end", 280.0, "seed-style"), r(ss, "preprocess", 131.0, "seed-style"),
            r(ss, "inference", 130.0, "seed-style", labels=[0.9, 0.03, 0.05, 0.02]),
            r(ss, "postprocess", 16.0, "seed-style"),
            r(us, "end-to-end", 400.0), r(us, "preprocess", 130.0), r(us, "inference", 60.0),
            r(us, "postprocess", 2.0)]   # usseg: end to end far above its stages -> flagged
    stages = ("preprocess", "inference", "postprocess")
    return {"group": "batch1", "rows": rows, "frames": {"count": 16, "height": 480, "width": 640, "seed": 1,
                                                        "truth_shares": [0.9, 0.03, 0.05, 0.02]},
            "ratios": [{"row": f"batch1/{us}/end-to-end", "reference": f"batch1/{ss}/end-to-end",
                        "differs": "engineering only", "headline": True}],
            "consistency": [{"pipeline": p, "end_to_end": f"batch1/{p}/end-to-end",
                             "stages": {s: f"batch1/{p}/{s}" for s in stages}} for p in (ss, us)],
            "notes": ["a note"], "load_before": 0.4, "load_after": 1.1, "seconds": 10.0, "rounds": 30}


def test_report_markdown_puts_the_headline_first_and_flags_inconsistency(tmp_path):
    models = [{"name": "seed-480x640-seed", "network": "seed UNet", "height": 480, "width": 640, "recipe": "seed",
               "changes": "", "weights": {"trained": True, "data": "phantom, 70 frames", "epochs": 20, "best_epoch": 19,
                                          "split": {"train": 49, "val": 7, "test": 14},
                                          "test_dice": {"MID": 0.7, "VTB": 0.8, "EPI": 0.6}, "mean_test_dice": 0.7}}]
    report = build([group_result()], None, {"device": "cpu", "rounds": 30, "warmup": 2, "models": models},
                   {"description": "test CPU, 2 cores", "load_start": 0.2, "load_end": 1.3}, "usseg-bench --quick")
    assert [c["ok"] for c in report["consistency"]] == [True, False]
    assert report["ratios"][0]["value"] == pytest.approx(0.7)
    text = markdown(report)
    lines = text.splitlines()
    assert lines[0] == "Command: `usseg-bench --quick`"
    assert "load average (1 min) 0.20 at the start, 1.30 at the end" in text
    assert "MID 3.00 %, VTB 5.00 %, EPI 2.00 %" in text                         # truth and label-map shares
    assert "trained on phantom, 70 frames (train/val/test 49/7/14), 20 epochs (best 20), test Dice 0.700" in text
    assert text.index("### Headline") < text.index("### Latency at batch 1")
    assert "**0.70x**" in text and "**NO: flagged**" in text
    assert "- (30 calls)" in text                                                 # p99 rule, with the count
    json_path, md, png = write(report, tmp_path)
    assert md.read_text() == text and png.stat().st_size > 1000
    lo, hi = bar_chart(report, tmp_path / "chart.png")                          # every bar above 70 ms here
    assert lo < SEED_HEADLINE_MS < hi and lo < min(r["median_ms"] for r in report["rows"] if r["stage"] == "end-to-end")
    loaded = load_rows(__import__("json").loads(json_path.read_text()))
    assert {(r.stage, r.impl) for r in loaded} >= {("end-to-end", "seed-style"), ("end-to-end", "usseg")}
    for r in __import__("json").loads(json_path.read_text())["rows"]:
        assert {"median_ms", "p99_ms", "frames", "weights"} <= set(r)


@pytest.mark.parametrize("shape", [(443, 625), (500, 700), (480, 640), (10, 10)])
def test_seed_style_pad_or_crop_is_symmetric(shape):
    img = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    out = pad_or_crop(img)
    assert out.shape == (480, 640)
    h, w = min(shape[0], 480), min(shape[1], 640)
    assert (out > 0).sum() == h * w
    rows, cols = np.nonzero(out)
    assert abs(rows.min() - (479 - rows.max())) <= 1 and abs(cols.min() - (639 - cols.max())) <= 1


@pytest.mark.parametrize("median_ms, verdict", [(0.21, "met"), (0.3, "met"), (0.31, "missed")])
def test_post_processing_target_is_read_on_the_trained_label_maps(median_ms, verdict):
    def pp(group, impl, ms, model):
        return {"id": f"{group}/{impl}/end-to-end", "group": group, "stage": "postprocess", "impl": impl,
                "provider": "CPU, 1 core", "precision": "-", "batch": 1, "model": model, "input": "480x640",
                "variant": "", "median_ms": ms, "p99_ms": None, "samples": 200, "frames": 200, "fps": 1e3 / ms}
    report = {"rows": [pp("postprocess-1core", "usseg", 0.05, ""), pp("postprocess-1core", "seed-style", 5.6, ""),
                       pp("postprocess-trained", "seed-style", 4.0, "seed-480x640-seed"),
                       pp("postprocess-trained", "usseg", median_ms, "seed-480x640-seed")],
              "ratios": [], "consistency": []}
    line = tables.postprocess_target(report)
    assert line.startswith("Target: post-processing <= 0.3 ms per frame of a trained network's label maps")
    assert f"**{median_ms:.3f} ms, {verdict}**" in line and "`seed-480x640-seed` at 480x640" in line
    body = tables.postprocess_lines(report)
    assert body[0] == line and sum("| usseg" in b for b in body) == 2  # both groups' rows, trained first
    assert tables.postprocess_target({**report, "rows": report["rows"][:2]}) is None  # synthetic maps only: no target
