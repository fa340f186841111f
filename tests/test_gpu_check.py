"""The GPU check's dry run on the CPU (tiny sizes, what needs CUDA skipped with the reason), and its
section runner: isolation, time limits, budget and partial reports."""

import json

import numpy as np
import pytest

from usseg.benchmarks import gpu_check
from usseg.benchmarks.gpu_sections import Setup


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    rc = gpu_check.main(["--out", str(out), "--device", "cpu", "--dry-run", "--work", str(work), "--inline"])
    return rc, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_dry_run_runs_every_section_and_says_why_it_skipped_one(dry_run):
    rc, doc, _ = dry_run
    status = {name: r["status"] for name, r in doc["sections"].items()}
    assert rc == 0 and list(status) == [s.name for s in gpu_check.SECTIONS]
    assert status == {**{name: "ok" for name in status}, "fused": "skipped"}
    assert "CUDA" in doc["sections"]["fused"]["note"]
    train = doc["sections"]["train"]["data"]
    assert train["profile"] == "tiny" and train["device"] == "cpu" and train["epochs"] == 1
    assert doc["sections"]["export"]["data"]["labels_equal_to_cpu_min"] == 1.0
    devices = doc["sections"]["providers"]["data"]["devices"]
    assert devices["cuda"] == {"skipped": "a dry run on the CPU"} and devices["auto"]["provider"] == "CPUExecutionProvider"
    assert devices["auto"]["same_labels_from_another_thread"] is True
    assert devices["auto"]["output"] == "labels"  # the GPU export README advises: argmax on the device


def test_dry_run_end_to_end_rows(dry_run):
    _, doc, _ = dry_run
    rows = {(r["pipeline"], r["batch"]): r for r in doc["sections"]["e2e"]["data"]["rows"]}
    host, graph = rows[("host preprocessing + ORT", 1)], rows[("in-graph preprocessing", 1)]
    assert host["preprocessing"] == "host" and graph["preprocessing"] == "in-graph"
    assert host["labels_equal_to_host_min"] == 1.0 and graph["labels_equal_to_host_min"] >= 0.999
    assert 0 < host["median_ms"] <= host["p99_ms"] and host["frames_per_s"] == pytest.approx(1e3 / host["median_ms"])
    assert set(host["targets"]) == {"median_ms<=2", "x100_seed_style"}
    assert set(rows[("in-graph preprocessing", 2)]["targets"]) == {"frames_per_s>=5000"}
    assert "not on a CUDA device" in rows[("fused preprocessing", 1)]["skipped"]
    seed = rows[("seed-style (cv2 + torch eager fp32)", 1)]
    assert seed["vs_seed_style"] == pytest.approx(1.0)
    assert host["vs_seed_style"] == pytest.approx(seed["median_ms"] / host["median_ms"])
    # where a frame's time goes: the Segmenter's own stage times, per frame, for every usseg row
    for row in (host, graph, rows[("in-graph preprocessing", 2)]):
        stages = row["stages_ms_per_frame"]
        assert set(stages) == {"preprocess", "inference", "postprocess"} and all(v > 0 for v in stages.values())
        assert sum(stages.values()) <= row["median_ms"] / row["batch"] * 1.5
    assert host["stages_ms_per_frame"]["preprocess"] > graph["stages_ms_per_frame"]["preprocess"]


def test_dry_run_markdown_names_the_machine_and_every_section(dry_run):
    _, doc, md = dry_run
    import onnxruntime as ort

    machine = next(line for line in md.splitlines() if line.startswith("Machine:"))
    assert f"ONNX Runtime {ort.__version__}" in machine and "driver" in machine and "CUDA" in machine
    assert f"NumPy {np.__version__}" in machine and "numba-cuda " in machine
    assert "| pipeline | batch | preprocessing |" in md and "| seed-style (cv2 + torch eager fp32) | 1 |" in md
    for name in doc["sections"]:
        assert f"| {name} | {doc['sections'][name]['status']} |" in md
    # how trained the timed network is, since the post-processing time depends on its label maps
    summary = doc["sections"]["models"]["data"]["training"]["summary"]
    line = next(line for line in md.splitlines() if line.startswith("- the timed network (tiny, fp32): 1 epochs"))
    assert f"best mean val Dice {summary['best_mean_val_dice']:.3f}" in line


def test_a_section_past_its_limit_is_stopped_and_the_others_kept(tmp_path):
    rc = gpu_check.main(["--out", str(tmp_path / "out"), "--device", "cpu", "--dry-run", "--work", str(tmp_path / "w"),
                         "--only", "machine,data", "--limit", "data=0.01"])
    doc = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert rc == 1 and doc["sections"]["machine"]["status"] == "ok"
    assert doc["sections"]["data"]["status"] == "timeout" and "0 s" in doc["sections"]["data"]["note"]
    assert doc["sections"]["machine"]["data"]["onnxruntime"]


def test_a_failed_section_skips_what_needs_it_and_loses_nothing_else(tmp_path):
    ran = []

    def runner(name, setup, timeout):
        ran.append(name)
        if name == "train":
            raise RuntimeError("CUDA failure 2: out of memory")
        return {"status": "ok", "data": {}, "seconds": 0.1}

    doc = gpu_check.run_all(Setup(tmp_path / "w", "cpu", dry=True), tmp_path / "out", 600, runner=runner)
    assert ran == ["machine", "data", "train", "models", "providers", "fused", "e2e"]
    assert doc["sections"]["train"]["status"] == "failed" and "out of memory" in doc["sections"]["train"]["note"]
    assert doc["sections"]["export"] == {"status": "skipped", "note": "needs section train"}
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert written["sections"]["e2e"]["status"] == "ok" and "| train | failed |" in (
        tmp_path / "out" / "gpu_check.md").read_text()


def test_no_section_starts_without_budget_left(tmp_path):
    doc = gpu_check.run_all(Setup(tmp_path / "w", "cpu", dry=True), tmp_path / "out", 5,
                            runner=lambda *a: pytest.fail("no section should start"))
    assert all(r["status"] == "skipped" for r in doc["sections"].values())
    assert "budget" in doc["sections"]["machine"]["note"]


def test_shares_in_the_report_are_rounded_down():
    """0.99998 of the pixels equal is not 1.0000, and 99.9987 % is not >= 99.999 %."""
    assert gpu_check._share(0.99998, 4) == "0.9999" and gpu_check._share(1.0, 4) == "1.0000"
    assert gpu_check._share(100 * 0.999987, 3) == "99.998" and gpu_check._share(None, 3) == "-"
