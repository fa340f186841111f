import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from usseg.runtime.cleanup import apply_steps, cleanup_plan, content_of
from usseg.runtime.contract import METADATA_KEY
from usseg.runtime.infer import main as infer_main
from usseg.runtime.preprocess import FrameError, preprocess
from usseg.runtime.providers import ModelError, ProviderError
from usseg.runtime.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg(tiny_onnx):
    return Segmenter(tiny_onnx, device="cpu", spacing_mm=0.2)


@pytest.fixture(scope="module")
def frames():
    from usseg.train.phantom import PhantomConfig, generate_frame

    return [generate_frame(PhantomConfig(height=240, width=300), seed=11, index=i)[0] for i in range(4)]


def plain_labels(seg, frame):
    """The same pipeline written with plain ONNX Runtime and numpy, as a reference, then the
    clean-up the contract chose on val (runtime/cleanup.py, checked against scipy in test_cleanup.py)."""
    spec, p = seg.contract.input, seg.contract.postprocess
    x, letterbox = preprocess(frame, seg.contract.recipe, spec.height, spec.width)
    session = ort.InferenceSession(str(seg.path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {spec.name: x[None, None]})[0][0]
    labels = logits.argmax(0).astype(np.uint8)
    chosen = cleanup_plan(seg.contract.classes, p.largest_component, p.fill_holes)
    return apply_steps(labels, chosen, content_of(letterbox)), letterbox


def test_labels_match_plain_onnxruntime_at_the_frame_size(seg, frames):
    for frame in frames:
        result = seg(frame)
        model_labels, letterbox = plain_labels(seg, frame)
        assert result.labels.shape == frame.shape
        assert np.array_equal(result.labels, letterbox.invert_labels(model_labels))
        assert set(result.timings) == {"preprocess", "inference", "postprocess", "total"}
        assert all(v >= 0 for v in result.timings.values())


def test_post_processing_matches_the_reference(seg, frames):
    from usseg.benchmarks.reference_postprocess import reference_postprocess

    for frame in frames:
        result = seg(frame)
        model_labels, letterbox = plain_labels(seg, frame)
        ref = reference_postprocess(model_labels, seg.contract.postprocess)
        for name, pts in (("MID", ref.mid), ("EPI", ref.epi)):
            ours = result.lines[name]
            assert (ours is None) == (pts is None), name
            if pts is not None:
                theirs = letterbox.to_frame(pts)
                direct = np.abs(ours - theirs).max(axis=1).max()
                swapped = np.abs(ours - theirs[::-1]).max(axis=1).max()
                assert min(direct, swapped) <= 3.0 / min(letterbox.scale_x, letterbox.scale_y) + 1e-6
        assert (result.box is None) == (ref.vtb is None)
        for i, name in enumerate(("MID", "VTB", "EPI")):
            assert np.array_equal(result.masks[name], letterbox.invert_labels(ref.masks[i]).astype(bool))


@pytest.mark.parametrize("convert", [
    lambda f: np.dstack([f] * 3),                                   # RGB
    lambda f: np.dstack([f] * 3 + [np.full_like(f, 255)]),           # RGBA
    lambda f: f.astype(np.uint16) * 257,                             # 16 bit
    lambda f: f.astype(np.float32) / 255.0,                          # float
])
def test_any_frame_kind_gives_the_same_result(seg, frames, convert):
    frame = frames[0]
    assert np.array_equal(seg(convert(frame)).labels, seg(frame).labels)


def test_any_frame_size_maps_back_to_that_size(seg, frames):
    for h, w in ((50, 300), (333, 97), (480, 640)):
        frame = cv2.resize(frames[1], (w, h))
        assert seg(frame).labels.shape == (h, w)


def test_batch_equals_frame_by_frame(seg, frames):
    for a, b in zip(seg.batch(frames), [seg(f) for f in frames]):
        assert np.array_equal(a.labels, b.labels)
    assert seg.batch([]) == []


def test_geometry_in_mm_uses_the_spacing(seg, frames):
    result = seg(frames[0])
    geo = result.geometry()
    for name, pts in result.lines.items():
        if pts is not None:
            np.testing.assert_allclose(np.array(geo["mm"][name]), np.round(pts * 0.2, 2), atol=0.02)
    assert geo["mm"]["spacing"] == 0.2


@pytest.mark.parametrize("bad,words", [
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((1, 100), np.uint8), "too small"),
    (np.full((40, 40), np.nan, np.float32), "NaN"),
    (np.zeros((5, 40, 40, 2), np.uint8), "expected HxW"),
    (np.zeros((40, 40, 7), np.uint8), "expected HxW"),
    (None, "numpy array"),
])
def test_bad_frames_raise_frame_error(seg, bad, words):
    with pytest.raises(FrameError, match=words):
        seg(bad)


def rewrite_contract(src, dst, mutate):
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            mutate(data)
            prop.value = json.dumps(data)
    onnx.save(model, str(dst))


def test_bad_models_are_refused_with_the_reason(tiny_onnx, tmp_path):
    no_contract = tmp_path / "bare.onnx"
    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    onnx.save(model, str(no_contract))
    wrong_version = tmp_path / "v99.onnx"
    rewrite_contract(tiny_onnx, wrong_version, lambda d: d.update(schema_version=99))
    bad_field = tmp_path / "badfield.onnx"
    rewrite_contract(tiny_onnx, bad_field, lambda d: d["input"].update(height=12345))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:1000])
    cases = [
        (tmp_path / "missing.onnx", "model file not found"),
        (no_contract, "no usseg contract"),
        (wrong_version, "'schema_version': 99 is not supported"),
        (bad_field, "does not match the contract"),
        (truncated, "cannot load this model"),
    ]
    for path, words in cases:
        with pytest.raises(ModelError, match=words) as err:
            Segmenter(path, device="cpu")
        assert str(path) in str(err.value)


def test_asking_for_cuda_on_a_cpu_build_says_how_to_fix_it(tiny_onnx):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        Segmenter(tiny_onnx, device="cuda")
    with pytest.raises(ProviderError, match="valid devices"):
        Segmenter(tiny_onnx, device="tpu")


def test_infer_cli_writes_outputs_and_reports_bad_files(tiny_onnx, frames, tmp_path, capsys, seed_sample):
    images = tmp_path / "in"
    images.mkdir()
    for i, f in enumerate(frames[:2]):
        cv2.imwrite(str(images / f"f{i}.png"), f)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    rc = infer_main(["--model", str(tiny_onnx), str(images), str(seed_sample.images / "phantom_sample.png"),
                     "--out", str(out), "--save-masks", "--device", "cpu", "--quiet"])
    assert rc == 1
    doc = json.loads((out / "results.json").read_text())
    assert [r["file"].split("/")[-1] for r in doc["frames"]] == ["f0.png", "f1.png", "phantom_sample.png"]
    assert doc["failures"][0]["file"].endswith("broken.png") and "not a readable image" in doc["failures"][0]["error"]
    overlay = cv2.imread(str(out / "phantom_sample_overlay.png"))
    mask = cv2.imread(str(out / "phantom_sample_mask.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (443, 625, 3) and mask.shape == (443, 625)
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    assert "3 frames, 1 failed" in capsys.readouterr().out


def test_two_onnxruntime_builds_are_called_out(monkeypatch, caplog, tmp_path):
    from usseg.runtime import providers
    from usseg.runtime.engine import session_plans

    monkeypatch.setattr(providers, "conflicting_ort_packages", lambda: ["onnxruntime", "onnxruntime-gpu"])
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="both onnxruntime and onnxruntime-gpu are installed"):
        session_plans("cuda", providers.ModelFacts(), cache_dir=tmp_path)
    plan = session_plans("auto", providers.ModelFacts(), cache_dir=tmp_path)[0]
    assert [name for name, _ in plan.providers] == ["CPUExecutionProvider"]
    assert "installed together" in caplog.text and any("pip uninstall" in n for n in plan.notes)
    # where the GPU build's files won, the CUDA provider is there: nothing to warn about
    caplog.clear()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    providers.warn_conflicting_packages("cuda")
    assert "installed together" not in caplog.text


def test_model_info_traces_the_result_back(seg, tiny_onnx):
    import hashlib
    from importlib import metadata

    info = seg.model_info()
    assert info["sha256"] == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert info["classes"] == list(seg.contract.classes) and info["recipe"] == seg.contract.recipe.to_dict()
    assert info["usseg"] == metadata.version("usseg") and info["onnxruntime"] == ort.__version__
    assert info["provider"] == "CPUExecutionProvider" and info["preprocessing"] == "host"
    assert "preprocessing=host" in repr(seg) and "provider=CPUExecutionProvider" in repr(seg)


@pytest.mark.parametrize("device", ["cuda:x", "cpu:1", "tensorrt:-1"])
def test_device_syntax_errors_list_the_valid_forms(tiny_onnx, device):
    with pytest.raises(ProviderError, match="cuda:N, tensorrt, tensorrt:N"):
        Segmenter(tiny_onnx, device=device)
