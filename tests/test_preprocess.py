import warnings

import cv2
import numpy as np
import pytest

from usseg.runtime.preprocess import FrameError, Letterbox, enhance, get_recipe, preprocess, to_grey8


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (120, 160)).astype(np.uint8), (0, 0), 2)
    return cv2.add(base, rng.integers(0, 40, (120, 160), dtype=np.uint8))


def test_seed_recipe_is_the_seed_chain_always_applied(frame):
    expected = cv2.fastNlMeansDenoising(frame, None, h=5, templateWindowSize=7, searchWindowSize=21)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(expected)
    expected = cv2.addWeighted(expected, 1.5, cv2.GaussianBlur(expected, (0, 0), 3), -0.5, 0)
    for _ in range(3):  # deterministic: never the seed's p=0.5
        assert np.array_equal(enhance(frame, get_recipe("seed")), expected)


def test_none_recipe_only_scales(frame):
    x, box = preprocess(frame, get_recipe("none"), 120, 160)
    assert box.top == box.left == 0
    lo, hi = frame.min(), frame.max()
    np.testing.assert_allclose(x, (frame.astype(np.float32) - lo) / (hi - lo), atol=1e-6)


def test_letterbox_keeps_aspect_and_pads(frame):
    x, box = preprocess(frame, get_recipe("seed"), 480, 320)  # tall target: pad top/bottom
    assert (box.new_h, box.new_w) == (240, 320) and box.top == 120
    assert x.shape == (480, 320) and x.dtype == np.float32
    assert (x[:120] == 0).all() and (x[360:] == 0).all()
    assert x[120:360].min() == 0.0 and x[120:360].max() == 1.0


def test_letterbox_round_trip_of_labels_and_points():
    box = Letterbox.fit(443, 625, 480, 640)
    labels = np.zeros((443, 625), np.uint8)
    labels[100:200, 300:400] = 2
    back = box.invert_labels(box.apply_mask(labels))
    assert back.shape == (443, 625)
    assert (back != labels).mean() < 0.005
    pts = np.array([[0.0, 0.0], [624.0, 442.0], [312.5, 100.25]])
    np.testing.assert_allclose(box.to_frame(box.to_model(pts)), pts, atol=1e-9)


@pytest.mark.parametrize("make", [
    lambda g: g,
    lambda g: np.dstack([g, g, g]),
    lambda g: np.dstack([g, g, g, np.full_like(g, 255)]),
    lambda g: g.astype(np.uint16) * 257,
    lambda g: g.astype(np.float32) / 255.0,
    lambda g: g[:, :, None],
])
def test_frames_of_any_kind_become_the_same_grey(frame, make):
    assert np.abs(to_grey8(make(frame)).astype(int) - frame).max() <= 1


def test_float_frames_beyond_float32_range_saturate_without_overflow():
    frame = np.array([[1e300, -1e300], [0.4, 200.6]])  # float64; 1e300 is inf as float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflowing cast would warn
        grey = to_grey8(frame)
    np.testing.assert_array_equal(grey, [[255, 0], [0, 201]])


@pytest.mark.parametrize("bad,words", [
    (np.zeros((0, 10), np.uint8), "empty"),
    (np.zeros((5, 5, 5, 5), np.uint8), "expected HxW"),
    (np.zeros((5, 5, 2), np.uint8), "expected HxW"),
    (np.full((5, 5), np.nan, np.float32), "NaN"),
    (np.zeros((5, 5), np.complex64), "not supported"),
    ("not an array", "numpy array"),
])
def test_bad_frames_are_named(bad, words):
    with pytest.raises(FrameError, match=words):
        to_grey8(bad)


def test_unknown_recipe_lists_valid_ones():
    with pytest.raises(ValueError, match="valid recipes are"):
        get_recipe("magic")
