"""In-graph preprocessing: the ONNX recipe against OpenCV, and the joined model against the host path."""

import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import USGRA

from usseg.benchmarks.models import phantom_frames
from usseg.export.cli import main as export_main
from usseg.runtime.contract import Contract, ContractError, FrameSpec
from usseg.runtime.preprocess import FrameError, Letterbox, enhance, get_recipe, preprocess
from usseg.runtime.recipe.denoise import nlm_weight_table
from usseg.runtime.recipe.graph import GraphRecipeError, recipe_graph
from usseg.runtime.recipe.unsharp import gaussian_fixed_point
from usseg.runtime.segmenter import Segmenter


def phantom(count, height, width):
    return phantom_frames(count, seed=11, height=height, width=width)


def usgra(count, height, width):
    """Real frames shrunk to the frame size under test (the shrink is only how the test gets frames)."""
    ids = sorted((USGRA / "images").glob("*.png"))[:count]
    return [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (width, height), interpolation=cv2.INTER_AREA)
            for p in ids]


def run_graph(recipe, frames, frame_hw, model_hw):
    model = recipe_graph(get_recipe(recipe), *frame_hw, *model_hw, batch=None, expose_enhanced=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"frame": np.stack(frames)[:, None]})


CASES = [
    # recipe, frame size, model size: same size, the 2x area shrink, a non-integer area shrink
    ("seed", (64, 80), (64, 80)),
    ("seed", (96, 128), (48, 64)),
    ("realtime", (100, 124), (48, 64)),
    ("no-clahe", (72, 96), (72, 96)),
    ("no-unsharp", (72, 96), (36, 48)),
    ("nlm-tiny", (60, 90), (60, 80)),
    ("none", (90, 120), (48, 64)),
    # other integer factors, which OpenCV rounds differently from 2x
    ("seed", (144, 192), (48, 64)),
    ("realtime", (192, 256), (48, 64)),
    ("none", (288, 384), (48, 64)),
]


@pytest.mark.parametrize("source", ["phantom", "usgra"])
@pytest.mark.parametrize("recipe,frame_hw,model_hw", CASES)
def test_graph_recipe_matches_opencv(recipe, frame_hw, model_hw, source):
    frames = (phantom if source == "phantom" else usgra)(3, *frame_hw)
    model_in, enhanced = run_graph(recipe, frames, frame_hw, model_hw)
    box = Letterbox.fit(*frame_hw, *model_hw)
    assert enhanced.shape == (3, 1, box.new_h, box.new_w)
    assert model_in.shape == (3, 1, *model_hw) and model_in.dtype == np.float32
    for i, frame in enumerate(frames):
        reference = enhance(box.resize_image(frame), get_recipe(recipe)).astype(np.int16)
        diff = np.abs(enhanced[i, 0].astype(np.int16) - reference)
        assert (diff <= 1).mean() >= 0.999, (recipe, source, i, diff.max())  # the acceptance figure
        assert diff.max() == 0, (recipe, source, i, (diff > 0).mean())      # what the graph achieves on the CPU
        host, _ = preprocess(frame, get_recipe(recipe), *model_hw)
        np.testing.assert_array_equal(model_in[i, 0], host)
        assert (model_in[i, 0] == 0).all() if host.max() == 0 else model_in[i, 0].max() == pytest.approx(1.0)


def test_flat_frame_gives_zeros_like_the_host_path():
    flat = np.full((48, 64), 90, np.uint8)
    model_in, enhanced = run_graph("seed", [flat], (48, 64), (48, 64))
    np.testing.assert_array_equal(enhanced[0, 0], enhance(flat, get_recipe("seed")))
    assert (model_in == 0).all()


def test_fixed_point_tables_reproduce_opencv_on_their_own():
    taps = gaussian_fixed_point(3.0)
    assert len(taps) == 19 and taps.sum() == 256 and (taps == taps[::-1]).all()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 50)).astype(np.uint8)
    padded = np.pad(img.astype(np.int64), 9, mode="reflect")
    rows = sum(taps[i] * padded[:, i:i + 50] for i in range(19))
    blur = (sum(taps[i] * rows[i:i + 40] for i in range(19)) + 32768) >> 16
    np.testing.assert_array_equal(blur, cv2.GaussianBlur(img, (0, 0), 3.0))
    weights, shift = nlm_weight_table(5.0, 7, 21)
    assert shift == 6 and weights[0] == 19096 and weights[-1] == 0 and (np.diff(weights) <= 0).all()


def test_unsupported_recipes_and_sizes_are_refused_by_name():
    with pytest.raises(GraphRecipeError, match="'denoise': 'bilateral'"):
        recipe_graph(get_recipe("bilateral"), 96, 128, 48, 64)
    with pytest.raises(GraphRecipeError, match="only shrinks"):
        recipe_graph(get_recipe("realtime"), 40, 40, 48, 64)
    with pytest.raises(GraphRecipeError, match="shrinks both sides"):
        recipe_graph(get_recipe("realtime"), 48, 640, 48, 634)  # the height rounds back to 48
    with pytest.raises(GraphRecipeError, match="larger than 13 px"):
        recipe_graph(get_recipe("seed"), 12, 64, 12, 64)
    with pytest.raises(GraphRecipeError, match="unsharp mask needs content larger than 9 px"):
        recipe_graph(get_recipe("realtime"), 9, 64, 9, 64)
    with pytest.raises(GraphRecipeError, match="opset >= 18"):
        recipe_graph(get_recipe("realtime"), 48, 64, 48, 64, opset=17)
    base = dict(classes=["background", "a"], input={"height": 48, "width": 64}, recipe={}, resize="letterbox",
                output="logits", postprocess={"kind": "none"}, schema_version=1)
    assert Contract.from_dict({**base, "frame": {"height": 96, "width": 128}}).frame == FrameSpec(height=96, width=128)
    assert Contract.from_dict(base).frame is None
    with pytest.raises(ContractError, match="'frame'"):
        Contract.from_dict({**base, "frame": {"height": 24, "width": 32}})
    with pytest.raises(ContractError, match="'frame.dtype': 'float32'"):
        Contract.from_dict({**base, "frame": {"height": 96, "width": 128, "dtype": "float32"}})
    with pytest.raises(ContractError, match="'frame.height': expected an integer"):
        Contract.from_dict({**base, "frame": {"height": 96.0, "width": 128}})


def test_exact_models_get_exact_cuda_options_and_no_tensorrt(tmp_path):
    from usseg.runtime.engine import session_plans
    from usseg.runtime.providers import CPU, EXACT_NOTE, ModelFacts, ProviderError, cuda_options

    plan = session_plans("auto", ModelFacts(exact=True), cache_dir=tmp_path)[0]
    assert EXACT_NOTE in plan.notes and plan.providers[-1][0] == CPU
    assert all(name != "TensorrtExecutionProvider" for name, _ in plan.providers)
    with pytest.raises(ProviderError, match="use device 'cuda'"):
        session_plans("tensorrt", ModelFacts(exact=True), cache_dir=tmp_path)
    assert cuda_options(True, exact=True)["use_tf32"] == "0"
    assert cuda_options(True, exact=True)["cudnn_conv_algo_search"] == "HEURISTIC"
    assert "use_tf32" not in cuda_options(True)


@pytest.fixture(scope="module")
def seed_recipe_run(phantom_data, tmp_path_factory):
    """A tiny network trained briefly with the full seed recipe (its weights hardly matter here)."""
    from usseg.train.train_cli import main as train_main

    run = tmp_path_factory.mktemp("seed-recipe")
    config = run / "config.in.json"
    config.write_text(json.dumps({"recipe": "seed"}))
    assert train_main(["--data", str(phantom_data), "--out", str(run / "run"), "--profile", "tiny",
                       "--config", str(config), "--epochs", "1", "--device", "cpu", "--no-progress"]) == 0
    return run / "run" / "best.pt"


def test_exported_graph_model_takes_raw_frames_and_matches_the_host_path(seed_recipe_run, phantom_data, tmp_path, capsys,
                                                                         caplog):
    host, graph, single = tmp_path / "host.onnx", tmp_path / "graph.onnx", tmp_path / "single.onnx"
    assert export_main([str(seed_recipe_run), "-o", str(host), "--frames", str(phantom_data)]) == 0
    assert export_main([str(seed_recipe_run), "-o", str(graph), "--frames", str(phantom_data),
                        "--graph-preprocess", "128x160", "--batch", "dynamic"]) == 0
    printed = capsys.readouterr().out
    in_graph = next(line for line in printed.splitlines() if line.strip().startswith("in-graph"))
    assert "frame [dynamic, 1, 128, 160] uint8" in printed
    assert "labels agree 100.0000 %" in in_graph and "max |input delta| 0.00e+00" in in_graph
    # A fixed batch of one, the default, and the labels output (argmax in the graph).
    assert export_main([str(seed_recipe_run), "-o", str(single), "--frames", str(phantom_data),
                        "--graph-preprocess", "128x160", "--output", "labels"]) == 0
    one = Segmenter(single, device="cpu")
    assert one.engine.session.get_inputs()[0].shape == [1, 1, 128, 160] and one.contract.output == "labels"
    a, b = Segmenter(host, device="cpu"), Segmenter(graph, device="cpu")
    assert b.contract.frame == FrameSpec(height=128, width=160) and b.contract.recipe.name == "seed"
    assert b.engine.session.get_inputs()[0].type == "tensor(uint8)"
    frames = phantom(4, 128, 160)
    for frame in frames:
        ra, rb = a(frame), b(frame)
        assert rb.labels.shape == (128, 160)
        assert (ra.labels == rb.labels).mean() >= 0.999
        np.testing.assert_array_equal(one(frame).labels, rb.labels)
        assert ra.lines.keys() == rb.lines.keys()
    # Multi-frame mode: one graph call for the batch, same labels as frame by frame.
    for frame, batched in zip(frames, b.batch(frames)):
        np.testing.assert_array_equal(batched.labels, b(frame).labels)
    # RGB frames are turned to grey first; a frame of another size is refused by name.
    rgb = np.repeat(frames[0][:, :, None], 3, axis=2)
    np.testing.assert_array_equal(b(rgb).labels, b(frames[0]).labels)
    with pytest.raises(FrameError, match="takes 128x160 frames only"):
        b(np.zeros((120, 160), np.uint8))
    # usseg-infer: the frame of the wrong size is skipped, named by file; the other one is segmented.
    from usseg.runtime.infer import main as infer_main

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    cv2.imwrite(str(good), frames[0])
    cv2.imwrite(str(bad), cv2.resize(frames[0], (150, 120)))
    assert infer_main(["--model", str(graph), str(good), str(bad), "--out", str(tmp_path / "out"),
                       "--device", "cpu"]) == 1
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["file"] for r in report["frames"]] == [str(good)]
    assert report["failures"][0]["file"] == str(bad) and "128x160" in report["failures"][0]["error"]
    assert f"skipped: {bad}: frame 120x150" in caplog.text


def test_graph_export_refusals_name_the_option(tiny_run, tmp_path, caplog):
    out = tmp_path / "m.onnx"
    assert export_main([str(tiny_run / "best.pt"), "-o", str(out), "--graph-preprocess", "32x40", "--no-verify"]) == 2
    assert "--graph-preprocess" in caplog.text and "only shrinks" in caplog.text
    assert export_main([str(tiny_run / "best.pt"), "-o", str(out), "--graph-preprocess", "128x160",
                        "--triton", str(tmp_path / "repo"), "--no-verify"]) == 2
    assert "cannot be combined" in caplog.text
    assert export_main([str(tiny_run / "best.pt"), "-o", str(out), "--graph-preprocess", "128x160",
                        "--opset", "17", "--no-verify"]) == 2
    assert "opset >= 18" in caplog.text
    assert not out.exists()
    with pytest.raises(SystemExit):
        export_main([str(tiny_run / "best.pt"), "-o", str(out), "--graph-preprocess", "480by640"])


def test_graph_check_reports_agreement_and_time(tmp_path):
    from usseg.benchmarks.graph_check import main as check_main

    out = tmp_path / "check.json"
    assert check_main(["--frame", "64x80", "--size", "32x40", "--count", "2", "--rounds", "2", "--batch", "2",
                       "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["recipe"] for r in rows] == ["seed", "realtime"]
    assert {r["conv_algo"] for r in rows} == {"as the Segmenter"}
    for r in rows:
        assert r["provider"] == "CPUExecutionProvider" and r["min_within_1"] >= 0.999
        assert r["model_input"] == [32, 40] and r["median_ms"] > 0 and r["batched_ms_per_frame"] > 0


def test_large_nlm_template_takes_the_exact_rounding_path():
    from usseg.runtime.preprocess import with_overrides

    recipe = with_overrides(get_recipe("seed"), name="nlm-9", nlm_template=9, nlm_search=11)
    frames = phantom(2, 64, 80)
    model = recipe_graph(recipe, 64, 80, 64, 80, batch=None, expose_enhanced=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    enhanced = session.run(["enhanced"], {"frame": np.stack(frames)[:, None]})[0]
    for i, frame in enumerate(frames):
        diff = np.abs(enhanced[i, 0].astype(np.int16) - enhance(frame, recipe).astype(np.int16))
        assert (diff <= 1).mean() >= 0.999


def test_graph_check_compares_conv_algorithm_searches(tmp_path):
    from usseg.benchmarks.graph_check import main as check_main

    out = tmp_path / "check.json"
    assert check_main(["--recipes", "realtime", "--frame", "48x64", "--size", "48x64", "--count", "1", "--rounds",
                       "1", "--batch", "2", "--conv-algo", "DEFAULT", "HEURISTIC", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["recipe"], r["conv_algo"]) for r in rows] == [("realtime", "DEFAULT"), ("realtime", "HEURISTIC")]
    assert all(r["min_exact"] == 1.0 for r in rows)


@pytest.mark.parametrize("opset", [18, 19])
def test_recipe_graph_declares_the_oldest_ir_version_its_opset_allows(opset):
    """An onnx newer than the ONNX Runtime (IR 14 against a runtime that reads up to 13) must not
    make the graph unreadable: the IR version follows the opset, not the installed onnx."""
    model = recipe_graph(get_recipe("realtime"), 48, 64, 48, 64, opset=opset)
    assert model.ir_version == {18: 8, 19: 9}[opset]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == [1, 1, 48, 64]
