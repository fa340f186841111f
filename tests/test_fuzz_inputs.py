"""Property tests of the input boundary: random annotation JSON through usseg prepare, random
frames through the Segmenter and the stream, random image files through usseg predict. Whatever
comes in, the process does not crash, writes nothing outside its output folder, and ends in a
result or in the documented error (exit code 1 with the bad input listed, or 2 with one line).

Examples are few and drawn the same way every run (derandomize), so `make test` stays fast and
a failure can be reproduced."""

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from boundary_support import tree_digest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx_tiny import tiny_model

from usseg.runtime.infer import main as infer_main
from usseg.runtime.preprocess import FrameError
from usseg.runtime.result import Result
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.stream import StreamStats, stream
from usseg.train.maskfolder import id_problem, open_mask_folder
from usseg.train.prepare import main as prepare_main


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def seg(model):
    return Segmenter(model, device="cpu")


# -- annotation JSON ----------------------------------------------------------------------------
IMAGE_KEYS = ("f0", "f1", "f2")
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                         max_size=3),
                           max_leaves=8)
coordinate = st.integers(-5, 70) | st.sampled_from([10**20, -(10**20)]) | json_values
point = st.lists(coordinate, min_size=2, max_size=2) | json_values
valid_shape = st.tuples(st.sampled_from(["MID", "VTB", "EPI"]), st.sampled_from(["line", "rect"]),
                        st.lists(st.lists(st.integers(0, 47), min_size=2, max_size=2), min_size=2, max_size=2)).map(list)
odd_shape = st.tuples(st.sampled_from(["MID", "VTB", "EPI", "mid", ""]) | json_values,
                      st.sampled_from(["line", "rect", "circle"]) | json_values,
                      st.lists(point, min_size=2, max_size=2) | json_values).map(list)
shape = valid_shape | odd_shape
VICTIM = "@VICTIM@"  # replaced by the absolute path of a file outside every input and output
BAD_KEYS = ["../../victim/important", VICTIM, "/abs/x", "..", ".h", "a\x00b", "C:x", "sub/f0", "f0\n", ""]
keys = st.sampled_from(IMAGE_KEYS * 4 + tuple(BAD_KEYS)) | st.text(max_size=10)
entries = st.lists(valid_shape, max_size=3) | st.lists(shape, max_size=4) | json_values


@st.composite
def annotation_texts(draw):
    """Mostly a JSON object (its keys may repeat), sometimes any JSON value or any text."""
    form = draw(st.sampled_from(["object"] * 4 + ["json", "text"]))
    if form == "text":
        return draw(st.text(max_size=30))
    if form == "json":
        return json.dumps(draw(json_values))
    good = [(key, draw(st.lists(valid_shape, max_size=3))) for key in draw(st.sets(st.sampled_from(IMAGE_KEYS)))]
    pairs = draw(st.permutations(good + draw(st.lists(st.tuples(keys, entries), max_size=5))))
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"


@fuzz(60)
@given(text=annotation_texts(), strict=st.sampled_from([False, False, True]))
def test_random_annotation_json_ends_in_a_mask_folder_or_a_reported_error(text, strict):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "src" / "images").mkdir(parents=True)
        (root / "victim").mkdir()
        rng = np.random.default_rng(0)
        for key in IMAGE_KEYS:
            cv2.imwrite(str(root / "src" / "images" / f"{key}.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
        cv2.imwrite(str(root / "victim" / "important.png"), np.zeros((48, 64), np.uint8))
        (root / "src" / "annotations.json").write_text(text.replace(VICTIM, str(root / "victim" / "important")))
        out = root / "out"
        before = tree_digest(root)
        rc = prepare_main(["--annotations", str(root / "src" / "annotations.json"), "--images",
                           str(root / "src" / "images"), "--out", str(out)] + (["--strict"] if strict else []))
        assert rc in (0, 1, 2)
        event(f"prepare exit code {rc}")
        assert tree_digest(root, skip=root / "out") == before
        assert sorted(p.name for p in root.iterdir()) == (["out", "src", "victim"] if rc < 2 else ["src", "victim"])
        if rc < 2:
            data = open_mask_folder(root / "out")
            assert set(data.ids()) <= set(IMAGE_KEYS) and all(id_problem(i) is None for i in data.ids())
            for item_id in data.ids():
                image, mask = data.load(item_id)
                assert image.shape == mask.shape == (48, 64)


# -- frames -------------------------------------------------------------------------------------
frame_dtypes = st.sampled_from([np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32,
                                np.float16, np.float32, np.float64, np.bool_, np.complex64])
image_shapes = st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
    lambda hw: st.sampled_from([hw, (*hw, 1), (*hw, 3), (*hw, 4)]))
frames = frame_dtypes.flatmap(lambda dtype: hnp.arrays(
    dtype, image_shapes | hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)))


@fuzz(150)
@given(frame=frames)
def test_random_frames_give_a_result_or_a_frame_error(seg, frame):
    try:
        result = seg(frame)
    except FrameError as exc:
        assert str(exc)
        event("frame refused")
        return
    event("frame segmented")
    assert isinstance(result, Result)
    assert result.labels.shape == frame.shape[:2] and result.labels.dtype == np.uint8
    assert int(result.labels.max(initial=0)) < len(seg.contract.classes)


@fuzz(30)
@given(batch=st.lists(frames | st.none() | st.integers(), min_size=0, max_size=5))
def test_random_frames_through_a_stream_are_results_or_failed_frames(seg, batch):
    stats = StreamStats()
    items = list(stream(seg, batch, policy="all", stats=stats))
    assert stats.captured == len(batch)
    assert stats.processed + stats.failed == len(batch) == len(items) + stats.failed
    assert stats.source_error is None and stats.ended_by == "end of source"
    assert all(item.result.labels.shape == item.frame.shape[:2] for item in items)


# -- image files --------------------------------------------------------------------------------
image_arrays = st.sampled_from([np.uint8, np.uint16]).flatmap(lambda dtype: hnp.arrays(
    dtype, st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
        lambda hw: st.sampled_from([hw, (*hw, 1), (*hw, 3), (*hw, 4)]))))
image_file = st.one_of(
    st.tuples(st.sampled_from([".png", ".tiff", ".bmp", ".jpg"]), image_arrays),
    st.tuples(st.sampled_from([".png", ".jpg", ".dcm"]), st.binary(max_size=64)),
)


def encode(suffix, content):
    if isinstance(content, bytes):
        return content
    if suffix in (".bmp", ".jpg"):
        content = (content >> 8).astype(np.uint8) if content.dtype == np.uint16 else content
        content = content[..., :3] if content.ndim == 3 and content.shape[2] == 4 and suffix == ".jpg" else content
    ok, buf = cv2.imencode(suffix, content)
    return buf.tobytes() if ok else b""


@fuzz(25)
@given(files=st.lists(image_file, min_size=1, max_size=4), same_name=st.booleans())
def test_random_image_files_through_predict_are_results_or_listed_failures(model, files, same_name):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inputs = []
        for n, (suffix, content) in enumerate(files):
            path = root / "in" / f"d{n}" / (f"x{suffix}" if same_name else f"f{n}{suffix}")
            path.parent.mkdir(parents=True)
            path.write_bytes(encode(suffix, content))
            inputs.append(str(path))
        before = tree_digest(root)
        rc = infer_main(["--model", str(model), *inputs, "--out", str(root / "out"), "--device", "cpu",
                         "--save-masks", "--no-progress", "--quiet"])
        assert tree_digest(root, skip=root / "out") == before
        doc = json.loads((root / "out" / "results.json").read_text())
        assert rc == (1 if doc["failures"] else 0)
        event(f"predict: {len(doc['frames'])} segmented, {len(doc['failures'])} failed")
        done = {r["file"] for r in doc["frames"]}
        assert done | {f["file"] for f in doc["failures"]} == set(inputs) and not done & {f["file"] for f in doc["failures"]}
        written = [name for names in doc["outputs"].values() for name in names]
        assert len(written) == len(set(written)) == 2 * len(doc["frames"])
        assert sorted(p.name for p in (root / "out").iterdir()) == sorted(written + ["results.json"])
