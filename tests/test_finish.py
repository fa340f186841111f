"""The finisher's mapping back onto the frame (runtime/finish.py): bit for bit what mapping each
plane alone through the letterbox gives (one nearest-neighbour resize per plane, then a bool
copy), and views of the model-size arrays where nothing is resized."""

import cv2
import numpy as np
import pytest

from usseg.runtime.contract import SPINE_CLASSES, Contract, InputSpec, PostprocessSpec
from usseg.runtime.finish import Finisher, labels_to_frame, spine_to_frame
from usseg.runtime.postprocess import postprocess_spine
from usseg.runtime.preprocess import Letterbox, get_recipe

LETTERBOXES = [
    # frame h, w -> model h, w: what the case covers
    (48, 64, 48, 64),    # identity: no resize, no padding
    (36, 64, 48, 64),    # padding above and below, no resize
    (48, 52, 48, 64),    # padding left and right (odd), no resize
    (96, 128, 48, 64),   # 2x shrink on the way in: 2x enlargement back
    (61, 83, 48, 64),    # non-integer factors, padding
    (30, 40, 48, 64),    # the frame smaller than the model: shrunk back
    (47, 129, 48, 64),   # a wide frame, rows of padding
]


def planes(rng, h, w):
    """Labels 0..3 in blobs (so that neighbours differ and equal in runs) and overlapping 0/1 masks."""
    labels = cv2.resize(rng.integers(0, 4, (h // 4 + 1, w // 4 + 1), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_NEAREST)
    masks = (rng.random((3, h, w)) < 0.3).astype(np.uint8)
    masks[0] |= labels == 1
    return labels, masks


def one_plane_at_a_time(labels, masks, box):
    """What the finisher did before: each plane through Letterbox.invert_labels, masks as bool copies."""
    return box.invert_labels(labels), [box.invert_labels(m).astype(bool) for m in masks]


@pytest.mark.parametrize("frame_h,frame_w,model_h,model_w", LETTERBOXES)
def test_mapping_equals_one_plane_at_a_time(frame_h, frame_w, model_h, model_w):
    rng = np.random.default_rng(frame_h * 1000 + frame_w)
    box = Letterbox.fit(frame_h, frame_w, model_h, model_w)
    for _ in range(3):
        labels, masks = planes(rng, model_h, model_w)
        want_labels, want_masks = one_plane_at_a_time(labels, masks, box)
        got_labels, got_masks = spine_to_frame(labels, masks, box)
        assert got_labels.dtype == np.uint8 and got_labels.shape == (frame_h, frame_w)
        assert got_masks.dtype == np.bool_ and got_masks.shape == (3, frame_h, frame_w)
        np.testing.assert_array_equal(got_labels, want_labels)
        for k in range(3):
            np.testing.assert_array_equal(got_masks[k], want_masks[k])
        np.testing.assert_array_equal(labels_to_frame(labels, box), want_labels)


@pytest.mark.parametrize("frame_h,frame_w", [(48, 64), (36, 64), (48, 52)])
def test_no_resize_gives_views_not_copies(frame_h, frame_w):
    box = Letterbox.fit(frame_h, frame_w, 48, 64)
    labels, masks = planes(np.random.default_rng(2), 48, 64)
    got_labels, got_masks = spine_to_frame(labels, masks, box)
    assert np.shares_memory(got_labels, labels) and np.shares_memory(got_masks, masks)
    if (frame_h, frame_w) == (48, 64):
        assert got_labels is labels and got_masks.base is masks  # the arrays themselves, masks as a bool view
    resized = Letterbox.fit(96, 128, 48, 64)
    got_labels, got_masks = spine_to_frame(labels, masks, resized)
    assert not np.shares_memory(got_labels, labels) and not np.shares_memory(got_masks, masks)


def spine_contract(h, w):
    return Contract(classes=SPINE_CLASSES, input=InputSpec(height=h, width=w, batch=1), recipe=get_recipe("none"),
                    output="labels", postprocess=PostprocessSpec(kind="spine", min_line_area=50, min_box_area=50),
                    provenance={})


def drawn_spine(h, w):
    """A MID line crossed by an EPI line beside a VTB box, so that every mask has pixels."""
    labels, cx = np.zeros((h, w), np.uint8), w // 2
    cv2.rectangle(labels, (cx - w // 3, h // 6), (cx - 8, h // 3), 2, -1)
    cv2.line(labels, (cx, h // 16), (cx + 2, h - h // 16), 1, 8)
    cv2.line(labels, (cx - w // 4, h // 2), (cx + w // 4, h // 2 + 4), 3, 6)
    return labels


@pytest.mark.parametrize("frame_h,frame_w", [(64, 96), (128, 192), (81, 113)])
def test_finisher_result_equals_one_plane_at_a_time(frame_h, frame_w):
    contract = spine_contract(64, 96)
    box = Letterbox.fit(frame_h, frame_w, 64, 96)
    labels = drawn_spine(64, 96)
    geo = postprocess_spine(labels.copy(), contract.postprocess)
    assert geo.mid is not None and all(m.any() for m in geo.masks)
    want_labels, want_masks = one_plane_at_a_time(labels, geo.masks, box)
    result = Finisher(contract)(labels, box)
    np.testing.assert_array_equal(result.labels, want_labels)
    assert list(result.masks) == ["MID", "VTB", "EPI"]
    for k, name in enumerate(("MID", "VTB", "EPI")):
        assert result.masks[name].dtype == np.bool_
        np.testing.assert_array_equal(result.masks[name], want_masks[k])
    np.testing.assert_array_equal(result.lines["MID"], box.to_frame(geo.mid))


@pytest.mark.parametrize("frame_h,frame_w", [(64, 96), (48, 96), (128, 192)])
def test_finisher_without_postprocessing_equals_one_plane_at_a_time(frame_h, frame_w):
    contract = Contract(classes=SPINE_CLASSES, input=InputSpec(height=64, width=96, batch=1),
                        recipe=get_recipe("none"), output="labels", postprocess=PostprocessSpec(kind="none"),
                        provenance={})
    box = Letterbox.fit(frame_h, frame_w, 64, 96)
    labels = drawn_spine(64, 96)
    want = box.invert_labels(labels)
    result = Finisher(contract)(labels, box)
    np.testing.assert_array_equal(result.labels, want)
    assert result.lines == {} and result.box is None
    for i, name in enumerate(SPINE_CLASSES[1:], start=1):
        np.testing.assert_array_equal(result.masks[name], want == i)
