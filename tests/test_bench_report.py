import json

import numpy as np
import pytest

from usseg.benchmarks.report import load_rows, markdown, write_report
from usseg.benchmarks.seed_style import pad_or_crop


def bench(name, stage, impl, seconds, frames=1, **info):
    return {"name": name, "stats": {"median": seconds, "rounds": len(seconds_list := [seconds] * 5),
                                    "data": seconds_list},
            "extra_info": {"stage": stage, "impl": impl, "frames": frames, "batch": frames, **info}}


RAW = {"benchmarks": [
    bench("a", "end-to-end", "seed-style", 0.260),
    bench("b", "end-to-end", "usseg", 0.026, precision="int8"),
    bench("c", "end-to-end", "usseg", 0.040, frames=4),          # 4 frames per call: 10 ms per frame
    bench("d", "inference", "usseg", 0.069),                     # no seed-style row for this stage
    {"name": "not ours", "stats": {"median": 1.0}, "extra_info": {}},
]}


def test_rows_are_per_frame_with_ratios_against_the_same_stage(tmp_path):
    rows = load_rows(RAW)
    assert [(r.stage, r.impl, round(r.median_ms, 3)) for r in rows] == [
        ("inference", "usseg", 69.0), ("end-to-end", "seed-style", 260.0),
        ("end-to-end", "usseg", 10.0), ("end-to-end", "usseg", 26.0)]
    table = markdown(rows, "test machine")
    assert "Machine: test machine" in table
    line = next(l for l in table.splitlines() if "| int8 |" in l)
    assert "| 26.00 |" in line and "| 10.00x |" in line and "| 2.69x |" in line  # 260/26 and 70/26
    batch_line = next(l for l in table.splitlines() if "| 4 |" in l)
    assert "| 26.00x |" in batch_line and "| 100.0 |" in batch_line           # 260/10, 100 frames/s
    inference = next(l for l in table.splitlines() if l.startswith("| inference"))
    assert inference.rstrip().endswith("| - | - |")                              # no baseline: "-", not 0
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(RAW))
    md, png, _ = write_report(raw, tmp_path, "test machine")
    assert md.read_text() == table and png.stat().st_size > 1000


@pytest.mark.parametrize("shape", [(443, 625), (500, 700), (480, 640), (10, 10)])
def test_seed_style_pad_or_crop_is_symmetric(shape):
    img = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    out = pad_or_crop(img)
    assert out.shape == (480, 640)
    h, w = min(shape[0], 480), min(shape[1], 640)
    assert (out > 0).sum() == h * w
    rows, cols = np.nonzero(out)
    assert abs(rows.min() - (479 - rows.max())) <= 1 and abs(cols.min() - (639 - cols.max())) <= 1


def test_rows_compare_with_the_seed_style_row_of_their_pair():
    raw = {"benchmarks": [
        bench("t1", "train step", "seed-style", 0.012, pair="tiny"),
        bench("t2", "train step", "usseg", 0.004, pair="tiny"),
        bench("d1", "train step", "seed-style", 0.080, pair="demo"),
        bench("d2", "train step", "usseg", 0.040, pair="demo"),
    ]}
    table = markdown(load_rows(raw), "m")
    ratios = [l.split("|")[10].strip() for l in table.splitlines() if "| usseg |" in l]
    assert sorted(ratios) == ["2.00x", "3.00x"]
