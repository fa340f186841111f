"""The GPU check's dry run on the CPU (tiny sizes, what needs CUDA skipped with the reason), and its
section runner: isolation, time limits, budget and partial reports."""

import json

import numpy as np
import pytest

from usseg.benchmarks import gpu_check, gpu_network
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
    assert status == {**{name: "ok" for name in status}, "fused": "skipped", "network": "skipped"}
    assert "CUDA" in doc["sections"]["fused"]["note"] and "CUDA provider" in doc["sections"]["network"]["note"]
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
    assert set(host["targets"]) == {"median_ms<=2", "p99_ms<=3", "x100_seed_style"}
    assert set(rows[("in-graph preprocessing", 2)]["targets"]) == {"frames_per_s>=2500"}
    assert host["geometry_equal_to_host"] is True and graph["geometry_equal_to_host"] in (True, False)
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
    network = md.split("## The network alone on the CUDA provider")[1].split("##")[0]
    assert "Not run: needs ONNX Runtime's CUDA provider (a dry run on the CPU)" in network
    for name in doc["sections"]:
        assert f"| {name} | {doc['sections'][name]['status']} |" in md
    # how trained the timed network is, since the post-processing time depends on its label maps
    summary = doc["sections"]["models"]["data"]["training"]["summary"]
    line = next(line for line in md.splitlines() if line.startswith("Timed network: tiny (fp32), 1 epochs"))
    assert f"best mean val Dice {summary['best_mean_val_dice']:.3f}" in line
    # one line per target of issue 30; the dry run measures all but the fused kernels' NLM
    targets = md.split("## Targets")[1].split("## End to end")[0]
    assert len([t for t in targets.splitlines() if t.startswith("| ") and not t.startswith("| target")]) == 8
    assert "| non-local means <= 0.3 ms, fused kernel alone | - | - | - |" in targets
    post = doc["sections"]["postprocess"]["data"]
    assert post["calls"] == 5 * post["frames"] and 0 < post["median_ms"] <= post["p99_ms"]
    assert f"| post-processing <= 0.3 ms per frame, one core | {post['median_ms']:.3f} ms |" in targets


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
    assert ran == ["machine", "data", "train", "models", "providers", "fused", "e2e", "postprocess", "network"]
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


# -- the targets of issue 30, from fake section outputs -------------------------------------------
def e2e_row(pipeline, batch, median, p99, ratio, agree=1.0, geometry=True):
    return {"pipeline": pipeline, "batch": batch, "median_ms": median, "p99_ms": p99,
            "frames_per_s": 1e3 * batch / median, "vs_seed_style": ratio, "labels_equal_to_host_min": agree,
            "geometry_equal_to_host": geometry}


def fake_doc(rows=None, post_ms=0.21, nlm_ms=0.28):
    sections = {"e2e": {"status": "ok", "data": {"rows": rows if rows is not None else [
        e2e_row("host preprocessing + ORT", 1, 200.0, 230.0, 1.0),
        e2e_row("fused preprocessing", 1, 1.8, 2.9, 112.0, agree=0.99995),
        e2e_row("in-graph preprocessing", 1, 9.0, 9.5, 22.0),
        e2e_row("fused preprocessing", 32, 11.2, 11.9, 3.2e3),
        {"pipeline": "seed-style (cv2 + torch eager fp32)", "batch": 1, "median_ms": 202.0, "p99_ms": 210.0,
         "frames_per_s": 4.95, "vs_seed_style": 1.0}]}}}
    if post_ms is not None:
        sections["postprocess"] = {"status": "ok", "data": {"median_ms": post_ms, "frames": 8, "calls": 200}}
    if nlm_ms is not None:
        sections["fused"] = {"status": "ok", "data": {"rows": [], "nlm": {"median_ms": nlm_ms, "frame": [480, 640],
                                                                         "rounds": 20}}}
    return {"sections": sections}


def by_target(doc):
    return {t["id"]: t for t in gpu_check.target_rows(doc)}


def test_targets_read_the_fastest_batch_1_row_and_the_best_multi_frame_row():
    t = by_target(fake_doc())
    assert len(t) == 8 and all(v["met"] is True for v in t.values()), t
    assert t["median"]["figure"] == 1.8 and t["median"]["where"] == "fused preprocessing, batch 1"
    assert t["p99"]["shown"] == "2.900 ms"
    assert t["frames_per_s"]["figure"] == pytest.approx(32e3 / 11.2) and t["frames_per_s"]["shown"] == "2,857 frames/s"
    assert t["vs_seed_style"]["shown"] == "112.0x"
    assert t["labels"]["shown"] == "99.995 %"
    assert t["postprocess"]["shown"] == "0.210 ms" and t["nlm"]["shown"] == "0.280 ms"


@pytest.mark.parametrize("change, target", [
    # what changes in the fake run, the one target it breaks
    ({"rows": [e2e_row("fused preprocessing", 1, 2.01, 2.5, 101.0), e2e_row("fused preprocessing", 32, 11.0, 12, 1)]},
     "median"),
    ({"rows": [e2e_row("fused preprocessing", 1, 1.9, 3.01, 101.0), e2e_row("fused preprocessing", 32, 11.0, 12, 1)]},
     "p99"),
    ({"rows": [e2e_row("fused preprocessing", 1, 1.9, 2.5, 101.0), e2e_row("fused preprocessing", 32, 12.9, 13, 1)]},
     "frames_per_s"),
    ({"rows": [e2e_row("fused preprocessing", 1, 1.9, 2.5, 99.9), e2e_row("fused preprocessing", 32, 11.0, 12, 1)]},
     "vs_seed_style"),
    ({"rows": [e2e_row("fused preprocessing", 1, 1.9, 2.5, 101.0, agree=0.99989),
               e2e_row("fused preprocessing", 32, 11.0, 12, 1)]}, "labels"),
    ({"rows": [e2e_row("fused preprocessing", 1, 1.9, 2.5, 101.0),
               e2e_row("fused preprocessing", 32, 11.0, 12, 1, geometry=False)]}, "geometry"),
    ({"post_ms": 0.31}, "postprocess"),
    ({"nlm_ms": 0.3001}, "nlm"),
])
def test_each_target_is_missed_alone(change, target):
    t = by_target(fake_doc(**change))
    assert {k for k, v in t.items() if v["met"] is False} == {target}


def test_targets_not_measured_are_dashes_not_zeros():
    doc = fake_doc(rows=[e2e_row("fused preprocessing", 1, 1.9, 2.5, None)], post_ms=None, nlm_ms=None)
    t = by_target(doc)
    assert t["median"]["met"] is True and t["vs_seed_style"]["met"] is None and t["vs_seed_style"]["shown"] == "-"
    for name in ("frames_per_s", "postprocess", "nlm"):
        assert t[name] == {**t[name], "figure": None, "shown": "-", "where": "-", "met": None}
    md = gpu_check.markdown({**doc, "started": "now", "device": "cuda", "dry_run": False, "quick": False,
                             "budget_s": 450, "total_s": 1.0})
    assert "| multi-frame >= 2,500 frames/s | - | - | - |" in md
    assert "Timed network: - (the models section did not run)" in md


# -- the network alone (a GPU section): its pure parts on fakes -----------------------------------------
def profile_events(nodes):
    """ONNX Runtime profile events for ``nodes`` [(name, op, provider)]: each with its fences, as ORT writes them."""
    events = [{"cat": "Session", "name": "model_run", "args": {}}]
    for name, op, provider in nodes:
        events += [{"cat": "Node", "name": f"{name}_fence_before", "args": {"op_name": op}},
                   {"cat": "Node", "name": f"{name}_kernel_time", "args": {"op_name": op, "provider": provider}},
                   {"cat": "Node", "name": f"{name}_fence_after", "args": {"op_name": op}}]
    return events


def test_placement_finds_nodes_off_the_cuda_provider_and_memcpy_nodes():
    on_cuda = [("conv1", "Conv", "CUDAExecutionProvider"), ("argmax", "ArgMax", "CUDAExecutionProvider")]
    good = gpu_network.placement(profile_events(on_cuda))
    assert good == {"nodes": 2, "by_provider": {"CUDAExecutionProvider": 2}, "not_on_cuda": [], "memcpy_nodes": 0,
                    "all_on_cuda": True}
    bad = gpu_network.placement(profile_events(on_cuda[:1] + [
        ("copy", "MemcpyToHost", "CUDAExecutionProvider"), ("argmax", "ArgMax", "CPUExecutionProvider")]))
    assert bad["nodes"] == 3 and bad["memcpy_nodes"] == 1 and bad["not_on_cuda"] == ["ArgMax (CPUExecutionProvider)"]
    assert bad["all_on_cuda"] is False
    assert gpu_network.placement([])["all_on_cuda"] is False  # nothing profiled proves nothing


def test_variants_change_the_cuda_options_only():
    from usseg.runtime.providers import CPU, CUDA, SessionPlan, cuda_options

    base = SessionPlan("cuda", ((CUDA, cuda_options(True)), (CPU, {})), "cuda", expect=CUDA)
    nhwc = gpu_network.variant_plan(base, gpu_network.VARIANTS["prefer_nhwc"])
    assert nhwc.options(CUDA) == {**cuda_options(True), "prefer_nhwc": "1"} and nhwc.options(CPU) == {}
    assert nhwc.cuda_graph == "cuda" and gpu_network.variant_plan(base, gpu_network.VARIANTS["today"]) == base


def test_network_report_lists_each_setting_and_says_where_nodes_ran():
    row = {"variant": "today", "options": {}, "replay_median_ms": 0.812, "replay_p99_ms": 0.9,
           "host_to_host_median_ms": 1.234, "host_to_host_p99_ms": 1.5, "labels_equal_to_today": 1.0}
    nhwc = {**row, "variant": "prefer_nhwc", "options": {"prefer_nhwc": "1"}, "replay_median_ms": 0.61,
            "host_to_host_median_ms": 1.02, "labels_equal_to_today": 0.99995}
    refused = {"variant": "no max workspace", "options": {"cudnn_conv_use_max_workspace": "0"}, "error": "refused"}
    data = {"rows": [row, nhwc, refused], "fastest": "prefer_nhwc",
            "placement": gpu_network.placement(profile_events([("c", "Conv", "CUDAExecutionProvider"),
                                                               ("a", "ArgMax", "CPUExecutionProvider")]))}
    md = "\n".join(gpu_network.network_lines(data))
    assert "| today | - | 0.812, 0.900 | 1.234, 1.500 | 100.000 % |" in md
    assert "| prefer_nhwc | prefer_nhwc=1 | 0.610, 0.900 | 1.020, 1.500 | 99.995 % |" in md
    assert "| no max workspace | cudnn_conv_use_max_workspace=0 | - | - | refused |" in md
    assert "Fastest host to host: prefer_nhwc." in md
    assert "1 on CPUExecutionProvider, 1 on CUDAExecutionProvider" in md
    assert "NOT every node on the CUDA provider: ArgMax (CPUExecutionProvider)" in md
    skipped = gpu_network.network_lines({"skipped": "needs ONNX Runtime's CUDA provider"})
    assert skipped[-1] == "Not run: needs ONNX Runtime's CUDA provider"
