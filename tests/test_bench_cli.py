"""usseg bench end to end on a given tiny checkpoint: what benchmark.json promises.

Structure only (which rows, which fields, which pairings): no assertion on a timing.
"""

import json

import pytest

from usseg.benchmarks.cli import main


@pytest.mark.slow
def test_bench_quick_on_a_checkpoint_writes_rows_ratios_and_checks(tiny_run, tmp_path):
    out = tmp_path / "bench"
    code = main(["--quick", "--model", str(tiny_run / "best.pt"), "--out", str(out), "--device", "cpu",
                 "-k", "end_to_end and not batch"])
    assert code == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert report["command"].startswith("usseg bench --out ") and "--quick" in report["command"]
    assert report["machine"]["load_start"] is not None and report["machine"]["load_end"] is not None
    rows = {r["id"]: r for r in report["rows"]}
    for r in rows.values():
        assert {"median_ms", "p99_ms", "frames", "weights"} <= set(r), r["id"]
        assert r["p99_ms"] is None and r["p99_note"].startswith("30 timed calls")   # --quick: 30 < 200
        assert r["weights"]["trained"] == "given" and r["weights"]["source"].endswith("best.pt")
    e2e = {r["impl"] for r in rows.values() if r["stage"] == "end-to-end"}
    assert e2e == {"seed-style", "usseg"}
    for ratio in report["ratios"]:
        assert ratio["reference"] in rows and ratio["row"] in rows and ratio["differs"]
    headline = [x for x in report["ratios"] if x["headline"]]
    assert len(headline) == 1 and rows[headline[0]["reference"]]["impl"] == "seed-style"
    checked = {c["pipeline"].split(":")[0] for c in report["consistency"]}
    assert checked >= {"seed-style", "usseg"}      # and usseg-graph: the tiny profile's recipe has no NLM
    for c in report["consistency"]:
        assert c["sum_ms"] == pytest.approx(sum(c["stages_ms"].values()), abs=1e-3)
    text = (out / "benchmark.md").read_text()
    assert text.index("### Headline") < text.index("### Latency at batch 1")
    assert "### Post-processing alone" not in text                   # not selected: no empty table
    assert (out / "benchmark.png").stat().st_size > 1000
