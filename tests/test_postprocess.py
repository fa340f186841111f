"""The fast spine post-processing against the plain seed reference and against known geometry."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from conftest import TRAINED_LABEL_MAPS
from numba.core.registry import CPUDispatcher
from skimage.morphology import skeletonize as skimage_skeletonize

from usseg.benchmarks.reference_postprocess import reference_postprocess, synthetic_spine_labels
from usseg.runtime import postprocess as fast
from usseg.runtime.contract import SPINE_CLASSES, PostprocessSpec, default_postprocess
from usseg.runtime.postprocess import (
    EPI,
    LABEL_EPI,
    LABEL_MID,
    LABEL_VTB,
    MID,
    VTB,
    SpineGeometry,
    bitplane,
    contours,
    postprocess_spine,
    split,
    thinning,
    warmup,
)

SPEC = PostprocessSpec()
H, W = 480, 640
RANDOM_CASES = 40


# --------------------------------------------------------------------------------- helpers


def end_point_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest end point distance, the two end points taken as an unordered pair."""
    same = max(np.linalg.norm(a[0] - b[0]), np.linalg.norm(a[1] - b[1]))
    swapped = max(np.linalg.norm(a[0] - b[1]), np.linalg.norm(a[1] - b[0]))
    return float(min(same, swapped))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter, _ = cv2.intersectConvexConvex(cv2.convexHull(a32), cv2.convexHull(b32))
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 1.0


def assert_close_to_reference(labels: np.ndarray, spec: PostprocessSpec = SPEC) -> SpineGeometry:
    got, want = postprocess_spine(labels, spec), reference_postprocess(labels, spec)
    np.testing.assert_array_equal(got.masks, want.masks)
    for name in ("mid", "epi"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), f"{name}: fast {g}, reference {w}"
        if g is not None:
            assert end_point_error(g, w) <= 3.0, f"{name}: fast {g.tolist()}, reference {w.tolist()}"
    assert (got.vtb is None) == (want.vtb is None), f"vtb: fast {got.vtb}, reference {want.vtb}"
    if got.vtb is not None:
        assert box_iou(got.vtb, want.vtb) >= 0.95
    return got


def assert_identical(got: SpineGeometry, want: SpineGeometry) -> None:
    np.testing.assert_array_equal(got.masks, want.masks)
    for name in ("mid", "vtb", "epi"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if g is not None:
            np.testing.assert_array_equal(g, w, err_msg=name)


def random_cases(count: int = RANDOM_CASES, seed: int = 2024) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthetic_spine_labels(rng, mid=rng.random() < 0.85, vtb=rng.random() < 0.9,
                                   epi=rng.random() < 0.9) for _ in range(count)]


@pytest.fixture(scope="module")
def cases() -> list[np.ndarray]:
    return random_cases()


@pytest.fixture(scope="module")
def references(cases) -> list[SpineGeometry]:
    return [reference_postprocess(labels, SPEC) for labels in cases]


def blank() -> np.ndarray:
    return np.zeros((H, W), np.uint8)


# ------------------------------------------------------------------- parity on random maps


def test_random_maps_within_tolerance_of_reference(cases, references):
    for labels, want in zip(cases, references):
        got = postprocess_spine(labels, SPEC)
        np.testing.assert_array_equal(got.masks, want.masks)
        for name in ("mid", "epi"):
            g, w = getattr(got, name), getattr(want, name)
            assert (g is None) == (w is None)
            if g is not None:
                assert end_point_error(g, w) <= 3.0
        assert (got.vtb is None) == (want.vtb is None)
        if got.vtb is not None:
            assert box_iou(got.vtb, want.vtb) >= 0.95


def test_random_maps_reproduce_reference_exactly(cases, references):
    """The skeleton and the Hough walk are reproduced bit for bit, so nothing drifts at all."""
    for labels, want in zip(cases, references):
        assert_identical(postprocess_spine(labels, SPEC), want)


def test_trained_network_maps_reproduce_reference_exactly():
    """A trained network's label maps (tests/data/trained-label-maps): masks, lines and boxes equal
    to the plain OpenCV + scikit-image rules bit for bit, and the maps give every outcome."""
    with np.load(TRAINED_LABEL_MAPS) as data:
        maps = data["labels"]
    assert maps.shape == (50, H, W) and maps.dtype == np.uint8
    references = [reference_postprocess(labels, SPEC) for labels in maps]
    for labels, want in zip(maps, references):
        assert_identical(postprocess_spine(labels, SPEC), want)
    assert [sum(getattr(r, name) is not None for r in references) for name in ("mid", "vtb", "epi")] == [40, 36, 37]


def test_random_maps_exercise_every_outcome(references):
    """The random cases are not vacuous: lines, boxes and the no-MID rule all occur."""
    assert sum(r.mid is not None for r in references) >= RANDOM_CASES // 2
    assert sum(r.epi is not None for r in references) >= RANDOM_CASES // 3
    assert sum(r.vtb is not None for r in references) >= RANDOM_CASES // 3
    assert sum(r.mid is None for r in references) >= 2


def test_other_frame_sizes_and_parameters():
    rng = np.random.default_rng(7)
    for height, width in ((240, 320), (101, 157), (480, 640)):
        for spec in (SPEC, PostprocessSpec(min_line_area=150, min_box_area=900, gap_kernel=3, gap_iterations=2),
                     default_postprocess(SPINE_CLASSES, (height, width)),
                     PostprocessSpec(hough_threshold=12, hough_min_length=2, hough_max_gap=8, morph_iterations=0)):
            labels = synthetic_spine_labels(rng, height, width)
            assert_identical(postprocess_spine(labels, spec), reference_postprocess(labels, spec))


def test_the_contracts_hough_defaults_are_the_seeds():
    spec = PostprocessSpec()
    assert (spec.hough_threshold, spec.hough_min_length, spec.hough_max_gap, spec.morph_iterations) == (
        fast.HOUGH_THRESHOLD, fast.HOUGH_MIN_LINE_LENGTH, fast.HOUGH_MAX_LINE_GAP, fast.MORPH_ITERATIONS)


def test_a_small_model_finds_the_line_a_seed_size_map_gives():
    """The seed's thresholds scaled to the model's size: the scene drawn at a quarter of 480x640
    gives a midline on the drawn line, of a length like the seed's at full size, where the
    unscaled thresholds find none."""
    big = np.zeros((480, 640), np.uint8)
    cv2.line(big, (320, 60), (330, 420), 1, 10)
    cv2.rectangle(big, (250, 380), (400, 430), 2, -1)
    small = cv2.resize(big, (160, 120), interpolation=cv2.INTER_NEAREST)
    seed_line = postprocess_spine(big, PostprocessSpec()).mid
    assert seed_line is not None
    assert postprocess_spine(small, PostprocessSpec()).mid is None
    scaled = postprocess_spine(small, default_postprocess(SPINE_CLASSES, (120, 160))).mid
    assert scaled is not None
    for x, y in scaled * 4:  # on the drawn line (x 320 at y 60 to x 330 at y 420), within 3 small pixels
        assert abs(x - (320 + 10 * (y - 60) / 360)) <= 12
    length = lambda seg: float(np.hypot(*(seg[1] - seg[0])))  # noqa: E731
    assert 4 * length(scaled) >= 0.5 * length(seed_line)


# ------------------------------------------------------------------------- known geometry


def test_vertical_mid_line_end_points():
    labels = blank()
    cv2.line(labels, (320, 60), (320, 400), LABEL_MID, 10)
    geo = assert_close_to_reference(labels)
    assert end_point_error(geo.mid, np.array([[320, 60], [320, 400]], float)) <= 3.0
    assert geo.epi is None and geo.vtb is None


def test_full_scene_geometry():
    labels = blank()
    cv2.rectangle(labels, (250, 180), (400, 260), LABEL_VTB, -1)
    cv2.line(labels, (330, 40), (330, 430), LABEL_MID, 10)
    cv2.line(labels, (260, 300), (380, 300), LABEL_EPI, 8)
    geo = assert_close_to_reference(labels)
    assert end_point_error(geo.mid, np.array([[330, 40], [330, 430]], float)) <= 3.0
    assert end_point_error(geo.epi, np.array([[260, 300], [380, 300]], float)) <= 3.0
    # MID crosses VTB, so gap fixing hands VTB the MID pixels up to 6 rows above and below it.
    grown = np.array([[250, 174], [400, 174], [400, 266], [250, 266]], float)
    assert box_iou(geo.vtb, grown) >= 0.95


def test_tilted_line_keeps_the_seeds_short_hough_segment():
    """On a tilted skeleton HoughLinesP's walk along its 1-degree angle drops off the line early;
    the seed keeps that shorter segment, and so does the fast version: both ends on the line."""
    labels = blank()
    p, q = np.array([330.0, 40.0]), np.array([345.0, 430.0])
    cv2.line(labels, tuple(int(v) for v in p), tuple(int(v) for v in q), LABEL_MID, 10)
    geo = assert_close_to_reference(labels)
    direction = (q - p) / np.linalg.norm(q - p)
    for point in geo.mid:
        offset = point - p
        assert abs(offset[0] * direction[1] - offset[1] * direction[0]) <= 3.0  # on the line
        assert -3.0 <= offset @ direction <= np.linalg.norm(q - p) + 3.0  # within its extent
    assert np.linalg.norm(geo.mid[1] - geo.mid[0]) >= 0.5 * np.linalg.norm(q - p)


def test_box_corners_of_a_rotated_rect():
    labels = blank()
    cv2.line(labels, (320, 20), (320, 460), LABEL_MID, 10)
    corners = cv2.boxPoints(((200, 240), (120, 70), 20)).round().astype(np.int32)
    cv2.fillPoly(labels, [corners], LABEL_VTB)
    geo = assert_close_to_reference(labels)
    assert box_iou(geo.vtb, corners.astype(float)) >= 0.95


# ------------------------------------------------------------------------------ the rules


def test_gap_fixing_takes_only_nearby_pixels_of_the_overlapping_class():
    labels = blank()
    cv2.line(labels, (320, 60), (320, 400), LABEL_MID, 10)  # MID covers x 315..325
    labels[200:204, 326:340] = LABEL_EPI  # EPI touching MID: within 6 px of it joins MID
    labels[300:304, 400:420] = LABEL_EPI  # EPI far from MID stays EPI only
    cv2.rectangle(labels, (200, 100), (310, 160), LABEL_VTB, -1)  # VTB 5 px from MID
    geo = assert_close_to_reference(labels)
    mid, vtb, epi = geo.masks
    assert mid[200:204, 326:332].all() and not mid[200:204, 332:340].any()
    assert not mid[300:304, 400:420].any()
    np.testing.assert_array_equal(epi, labels == LABEL_EPI)  # EPI is never changed
    assert vtb[100:161, 315:317].all()  # MID pixels next to VTB joined VTB
    assert not vtb[170:, :].any()


@pytest.mark.parametrize("mid_blob", [
    None,  # no MID pixel at all
    (slice(100, 120), slice(300, 320)),  # a MID blob of contour area 19 * 19 = 361 < 500
], ids=["no-mid", "mid-below-area-threshold"])
def test_no_mid_line_drops_everything(mid_blob):
    labels = blank()
    if mid_blob is not None:
        labels[mid_blob] = LABEL_MID
    cv2.rectangle(labels, (200, 150), (350, 260), LABEL_VTB, -1)
    cv2.line(labels, (220, 320), (360, 310), LABEL_EPI, 9)
    geo = assert_close_to_reference(labels)
    assert geo.mid is None and geo.vtb is None and geo.epi is None
    assert not geo.masks.any()


def test_empty_map():
    geo = assert_close_to_reference(blank())
    assert geo.mid is None and geo.vtb is None and geo.epi is None
    assert geo.masks.shape == (3, H, W) and geo.masks.dtype == np.uint8 and not geo.masks.any()


def test_shapes_touching_the_border():
    labels = blank()
    cv2.line(labels, (3, 0), (20, 479), LABEL_MID, 12)
    cv2.line(labels, (0, 200), (90, 215), LABEL_EPI, 10)
    cv2.rectangle(labels, (560, 0), (639, 120), LABEL_VTB, -1)
    cv2.circle(labels, (639, 479), 9, LABEL_MID, -1)
    geo = assert_close_to_reference(labels)
    assert geo.mid is not None and geo.epi is not None and geo.vtb is not None


def test_one_pixel_wide_shapes():
    labels = blank()
    cv2.line(labels, (320, 20), (330, 460), LABEL_MID, 1)
    cv2.line(labels, (100, 300), (500, 310), LABEL_EPI, 1)
    cv2.rectangle(labels, (100, 100), (300, 200), LABEL_VTB, 1)
    geo = assert_close_to_reference(labels)
    assert geo.mid is None  # opening removes a 1-px line, so the rule fires
    thick = blank()
    cv2.line(thick, (320, 20), (330, 460), LABEL_MID, 10)
    cv2.line(thick, (100, 300), (500, 310), LABEL_EPI, 1)
    cv2.rectangle(thick, (100, 100), (300, 200), LABEL_VTB, 1)
    geo = assert_close_to_reference(thick)
    assert geo.mid is not None and geo.epi is None and geo.vtb is not None


def _scene(height: int, width: int, draw) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)
    draw(labels)
    return labels


EDGE_CASES = [
    # frame size, what is drawn: what the case adds
    ((1, 1), lambda m: None),  # the smallest frame, empty
    ((1, 9), lambda m: m.__setitem__((0, slice(2, 7)), LABEL_MID)),  # one row
    ((9, 1), lambda m: m.__setitem__((slice(0, 9), 0), LABEL_VTB)),  # one column, all one class
    ((8, 8), lambda m: m.__setitem__((slice(None), slice(None)), LABEL_MID)),  # the whole tiny frame is MID
    ((7, 13), lambda m: cv2.line(m, (6, 0), (6, 6), LABEL_MID, 3)),  # odd sizes, a line edge to edge
    ((37, 53), lambda m: (cv2.line(m, (26, 0), (27, 36), LABEL_MID, 5), cv2.rectangle(m, (0, 30), (52, 36), LABEL_VTB, -1))),
    ((101, 157), lambda m: (cv2.line(m, (78, 0), (80, 100), LABEL_MID, 9), cv2.line(m, (0, 50), (156, 52), LABEL_EPI, 7))),
    ((480, 640), lambda m: (cv2.line(m, (320, 40), (330, 440), LABEL_MID, 10),  # EPI absent, VTB at the corner
                            cv2.rectangle(m, (600, 440), (639, 479), LABEL_VTB, -1))),
    ((480, 640), lambda m: (cv2.line(m, (320, 40), (330, 440), LABEL_MID, 10),  # VTB absent, EPI on the border
                            cv2.line(m, (0, 479), (200, 470), LABEL_EPI, 9))),
    ((480, 640), lambda m: [cv2.line(m, (x, 40), (x + 8, 440), LABEL_MID, 10) for x in (100, 300, 500)]),  # three MID blobs
    ((480, 640), lambda m: [cv2.rectangle(m, (x, 300), (x + 60, 340), LABEL_VTB, -1) for x in (20, 200, 380)]
     + [cv2.line(m, (320, 0), (320, 479), LABEL_MID, 12)]),  # several VTB blobs, one crossed by MID
    ((239, 319), lambda m: (cv2.line(m, (0, 0), (318, 238), LABEL_MID, 11),  # corner to corner, EPI at the edges
                            cv2.line(m, (0, 120), (318, 120), LABEL_EPI, 4))),
]


@pytest.mark.parametrize("size, draw", EDGE_CASES)
def test_edge_cases_equal_the_reference(size, draw):
    """Tiny and odd frames, absent classes, shapes on the border, several blobs of a class: the
    same masks and geometry as the full-frame reference, with a spec scaled to the frame."""
    labels = _scene(*size, draw)
    for spec in (SPEC, PostprocessSpec(min_line_area=2, min_box_area=2, hough_threshold=3, hough_min_length=1)):
        assert_identical(postprocess_spine(labels, spec), reference_postprocess(labels, spec))


def test_stray_blobs_far_from_the_line_do_not_change_it():
    labels = blank()
    cv2.line(labels, (300, 50), (330, 420), LABEL_MID, 10)
    for x, y, r in ((30, 30, 8), (600, 40, 5), (50, 450, 7), (620, 460, 3), (200, 240, 9)):
        cv2.circle(labels, (x, y), r, LABEL_MID, -1)
    geo = assert_close_to_reference(labels)
    clean = blank()
    cv2.line(clean, (300, 50), (330, 420), LABEL_MID, 10)
    np.testing.assert_array_equal(geo.mid, postprocess_spine(clean, SPEC).mid)


# ---------------------------------------------------------------------- building blocks


def random_shapes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(0, 3)
        p = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if kind == 0:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, p, q, 1, int(rng.integers(1, 14)))
        elif kind == 1:
            cv2.circle(image, p, int(rng.integers(1, 20)), 1, -1)
        else:
            image[rng.random(image.shape) < 0.3] = 1
    return image


def test_skeleton_matches_skimage():
    rng = np.random.default_rng(11)
    for _ in range(150):
        image = random_shapes(rng, 70, 90)
        expected = skimage_skeletonize(image > 0).astype(np.uint8)
        np.testing.assert_array_equal(fast.skeletonize(image), expected)


def test_probabilistic_hough_matches_opencv():
    rng = np.random.default_rng(12)
    for k in range(120):
        image = np.zeros((H, W), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            p = (int(rng.integers(0, W)), int(rng.integers(0, H)))
            q = (int(rng.integers(0, W)), int(rng.integers(0, H)))
            cv2.line(image, p, q, 255, int(rng.integers(1, 4)))
        if k % 3 == 0:
            image[rng.random(image.shape) < 0.002] = 255
        expected = cv2.HoughLinesP(image, fast.HOUGH_RHO, fast.HOUGH_THETA, fast.HOUGH_THRESHOLD,
                                   minLineLength=fast.HOUGH_MIN_LINE_LENGTH, maxLineGap=fast.HOUGH_MAX_LINE_GAP)
        expected = np.zeros((0, 4), np.int32) if expected is None else expected.reshape(-1, 4)
        np.testing.assert_array_equal(fast.probabilistic_hough(image), expected)


def test_thinning_table_departs_from_the_paper_only_where_skimage_does():
    paper = np.array([thinning._zhang_suen_removal(code) for code in range(256)])
    departs = np.nonzero(paper != fast.THINNING_TABLE)[0]
    assert sorted(departs.tolist()) == sorted(thinning._SKIMAGE_TABLE_DEPARTURES)


def packed(image: np.ndarray):
    """A binary image as the split packs it (as MID): its words and their spans per row."""
    height, width = image.shape
    words = (width + 63) // 64
    planes, spans = np.empty((3, height, words), np.uint64), np.empty((3, 2, height), np.int32)
    highest = split._split_classes((image != 0).astype(np.uint8), np.empty((3, height, width), np.uint8), planes,
                                   spans, np.empty((3, 4), np.int64), np.empty((3, words), np.uint64))
    assert highest == 0
    return planes[MID].copy(), spans[MID].copy()


def unpacked(plane: np.ndarray, width: int, region=None) -> np.ndarray:
    """The pixels of a packed plane; with a region (top, rows, w0, words), only those, 0 elsewhere."""
    image = np.unpackbits(plane.view(np.uint8), axis=1, bitorder="little")[:, :width]
    if region is None:
        return image
    top, rows, w0, words = region
    inside = np.zeros_like(image)
    inside[top:top + rows, 64 * w0:64 * (w0 + words)] = 1
    return image * inside


@pytest.mark.parametrize("height, width", [(1, 1), (7, 63), (9, 64), (13, 65), (40, 157), (480, 640)])
def test_split_gives_each_class_packed_with_its_spans_and_box(height, width):
    rng = np.random.default_rng(height * width)
    for density in (0.0, 0.02, 0.5):
        labels = ((rng.random((height, width)) < density) * rng.integers(1, 4, (height, width))).astype(np.uint8)
        words = (width + 63) // 64
        masks, planes = np.full((3, height, width), 9, np.uint8), np.empty((3, height, words), np.uint64)
        spans, bounds = np.empty((3, 2, height), np.int32), np.empty((3, 4), np.int64)
        assert split._split_classes(labels, masks, planes, spans, bounds, np.empty((3, words), np.uint64)) == 0
        for c, value in enumerate((LABEL_MID, LABEL_VTB, LABEL_EPI)):
            np.testing.assert_array_equal(masks[c], labels == value)
            np.testing.assert_array_equal(unpacked(planes[c], width), masks[c])
            x, y, w, h = cv2.boundingRect(masks[c])
            assert tuple(bounds[c]) == ((y, y + h, x, x + w) if w else (0, 0, 0, 0))
            for i in range(height):
                nonzero = np.nonzero(planes[c, i])[0]
                want = (nonzero[0], nonzero[-1] + 1) if nonzero.size else (0, 0)
                assert tuple(spans[c, :, i]) == want
    labels = np.zeros((height, width), np.uint8)
    labels[height // 2, width // 2] = 7
    assert split._split_classes(labels, masks, planes, spans, bounds, np.empty((3, words), np.uint64)) == 7


def region_with_margin(rng, image, margin):
    """A random word-aligned region of the frame, the image kept only ``margin`` pixels inside it
    (or up to the frame's edge): the packed kernels' promise is the full frame's result there."""
    height, width = image.shape
    words = (width + 63) // 64
    top, bottom = sorted(int(v) for v in rng.integers(0, height + 1, 2))
    w0, w1 = sorted(int(v) for v in rng.integers(0, words + 1, 2))
    if top == bottom or w0 == w1:
        top, bottom, w0, w1 = 0, height, 0, words
    inner = np.zeros_like(image)
    i0, i1 = top if top == 0 else top + margin, bottom if bottom == height else bottom - margin
    j0, j1 = 64 * w0 if w0 == 0 else 64 * w0 + margin, width if 64 * w1 >= width else 64 * w1 - margin
    if i0 < i1 and j0 < j1:
        inner[i0:i1, j0:j1] = image[i0:i1, j0:j1]
    return inner, (top, bottom - top, w0, w1 - w0)


def test_packed_erosion_and_dilation_equal_opencv():
    """Squares from 3 to 281 pixels (past 63 the kernel works in steps), OpenCV's borders (the
    frame's edge neither grows nor erodes a shape), any region with room around the shapes."""
    rng = np.random.default_rng(21)
    for case in range(300):
        height, width = int(rng.integers(1, 80)), int(rng.integers(1, 200))
        image = (rng.random((height, width)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        r = int(rng.integers(1, 8)) if case % 5 else int(rng.integers(60, 141))
        erode = bool(case % 2)
        image, region = region_with_margin(rng, image, 2 * r)
        top, rows, w0, words = region
        plane, spans = packed(image)
        work = np.empty((2,) + plane.shape, np.uint64)
        work_spans = np.empty((2,) + spans.shape, np.int32)
        bitplane._morph(plane, spans, work[0], work_spans[0], work[1], work_spans[1], top, rows, w0, words,
                        height, width, r, erode, np.empty(plane.shape[1], np.uint64))
        want = (cv2.erode if erode else cv2.dilate)(image, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        np.testing.assert_array_equal(unpacked(work[0], width, region), want, err_msg=f"case {case}, r {r}, {erode=}")
        for i in range(top, top + rows):  # the spans cover every non-zero word of the region
            nonzero = np.nonzero(work[0, i, w0:w0 + words])[0] + w0
            assert not nonzero.size or work_spans[0, 0, i] <= nonzero[0] <= nonzero[-1] < work_spans[0, 1, i]


def test_packed_open_close_equals_opencv_morphology():
    rng = np.random.default_rng(22)
    for case in range(150):
        height, width = int(rng.integers(1, 90)), int(rng.integers(1, 200))
        image = (rng.random((height, width)) < rng.uniform(0.2, 0.9)).astype(np.uint8)
        r = int(rng.integers(1, 5))
        image, region = region_with_margin(rng, image, 2 * r)
        top, rows, w0, words = region
        plane, spans = packed(image)
        work, work_spans = np.empty((3,) + plane.shape, np.uint64), np.empty((3,) + spans.shape, np.int32)
        bitplane._open_close(plane, spans, work, work_spans, top, rows, w0, words, height, width, r,
                             np.empty(plane.shape[1], np.uint64))
        want = cv2.morphologyEx(image, cv2.MORPH_OPEN, fast.MORPH_KERNEL, iterations=r)
        want = cv2.morphologyEx(want, cv2.MORPH_CLOSE, fast.MORPH_KERNEL, iterations=r)
        np.testing.assert_array_equal(unpacked(work[0], width, region), want, err_msg=f"case {case}")


def contour_scratch(height: int, width: int):
    size = height * (width // 2 + 1) + 1
    return (np.empty((4, size), np.int32), np.empty(size, np.int32), np.empty((4, size), np.int32),
            np.empty((4 * height * width + 1, 2), np.int32))


def test_largest_contour_its_points_and_its_fill_equal_opencv():
    """Noise, blobs with holes, shapes touching the edge: the contour cv2.findContours and
    cv2.contourArea pick (strict and not, ties to the last found), its CHAIN_APPROX_SIMPLE points,
    and cv2.drawContours' fill of it."""
    rng = np.random.default_rng(23)
    for case in range(600):
        height, width = int(rng.integers(1, 70)), int(rng.integers(1, 150))
        image = (rng.random((height, width)) < rng.uniform(0.05, 0.9)).astype(np.uint8)
        if case % 3 == 0:
            image = cv2.morphologyEx(image, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        plane, spans = packed(image)
        runs, parent, gaps, points = contour_scratch(height, width)
        words = plane.shape[1]
        count = contours._runs(plane, spans, 0, height, 0, words, runs[0], runs[1], runs[2], runs[3])
        contours._components(runs[1], runs[2], runs[3], height, parent)
        found, _ = cv2.findContours(image, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        threshold = int(rng.integers(1, 30))
        for strict, min_area in ((True, 0), (False, 0), (True, threshold), (False, threshold)):
            best, best_area = None, -1.0
            for contour in found:  # the seed's pick
                area = cv2.contourArea(contour)
                if (area > min_area if strict else area >= min_area) and area > best_area:
                    best, best_area = contour, area
            k = contours._largest(plane, 0, height, 0, words, runs[0], runs[1], parent, count, 2 * min_area, strict,
                                  points)
            assert (k < 0) == (best is None), f"case {case}"
            if best is None:
                continue
            twice_area, length = contours._trace(plane, 0, height, 0, words, runs[0][k], runs[1][k], points, True)
            assert twice_area == round(2 * best_area)
            np.testing.assert_array_equal(points[:length], best.reshape(-1, 2), err_msg=f"case {case}")
            box = np.empty(4, np.int64)
            image_filled = contours._fill(runs[0], runs[1], runs[2], runs[3], 0, parent, k, count, gaps[0], gaps[1],
                                          gaps[2], gaps[3], np.empty((height + 2) * (width + 2), np.uint8), box)
            x, y, w, h = cv2.boundingRect(best)
            want = np.zeros((h + 2, w + 2), np.uint8)
            cv2.drawContours(want, [best], -1, 1, cv2.FILLED, offset=(1 - x, 1 - y))
            assert tuple(box) == (y, x, h, w)
            np.testing.assert_array_equal(image_filled, want, err_msg=f"case {case}")


# ------------------------------------------------------------------- input and plumbing


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 5, 3), np.uint8), "2-D"),
    (np.zeros(20, np.uint8), "2-D"),
    (np.zeros((4, 5), np.float32), "uint8"),
    (np.zeros((4, 5), np.int64), "uint8"),
    (np.zeros((0, 5), np.uint8), "empty"),
    ([[0, 1], [2, 3]], "numpy array"),
])
def test_bad_input_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        postprocess_spine(bad, SPEC)


def test_unknown_label_value_is_refused():
    labels = blank()
    labels[10, 10] = 4
    with pytest.raises(ValueError, match="value 4"):
        postprocess_spine(labels, SPEC)


def test_masks_written_into_out(cases):
    out = np.full((3, H, W), 7, np.uint8)
    for labels in cases[:5]:
        geo = postprocess_spine(labels, SPEC, out=out)
        assert geo.masks is out
        np.testing.assert_array_equal(out, reference_postprocess(labels, SPEC).masks)
    with pytest.raises(ValueError, match="out must be"):
        postprocess_spine(cases[0], SPEC, out=np.zeros((3, H, W - 1), np.uint8))


def test_non_contiguous_labels_are_accepted(cases):
    wide = np.zeros((H, 2 * W), np.uint8)
    wide[:, ::2] = cases[0]
    assert_identical(postprocess_spine(wide[:, ::2], SPEC), reference_postprocess(cases[0], SPEC))


def test_threads_get_their_own_scratch(cases, references):
    results: dict[int, list[SpineGeometry]] = {}

    def work(k: int) -> None:
        results[k] = [postprocess_spine(labels, SPEC) for labels in cases[:12]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(3):
        for got, want in zip(results[k], references[:12]):
            assert_identical(got, want)


def all_kernels() -> dict[str, CPUDispatcher]:
    """Every Numba kernel of the post-processing package, by module and name."""
    modules = [importlib.import_module(f"{fast.__name__}.{info.name}") for info in pkgutil.iter_modules(fast.__path__)]
    return {f"{module.__name__}.{name}": obj for module in modules for name, obj in vars(module).items()
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__}


def test_warmup_compiles_every_kernel_a_frame_needs(cases):
    warmup()
    kernels = all_kernels()
    assert {name.split(".")[-2] for name in kernels} == {"bitplane", "contours", "hough", "shapes", "split",
                                                          "thinning"}
    before = {name: len(kernel.signatures) for name, kernel in kernels.items()}
    for labels in cases[:10]:
        postprocess_spine(labels, SPEC)
        postprocess_spine(labels, SPEC, out=np.empty((3, H, W), np.uint8))
    after = {name: len(kernel.signatures) for name, kernel in kernels.items()}
    assert after == before


def test_plane_order_is_mid_vtb_epi():
    assert (MID, VTB, EPI) == (0, 1, 2)


_WITHOUT_TRAINING_PACKAGES = """
import sys

BLOCKED = {"torch", "monai", "albumentations", "iterstrat", "skimage", "scipy"}


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not available to the runtime")


sys.meta_path.insert(0, Refuse())
import cv2
import numpy as np
from usseg.runtime.postprocess import postprocess_spine, warmup

warmup()
labels = np.zeros((480, 640), np.uint8)
cv2.line(labels, (320, 60), (320, 400), 1, 10)
assert postprocess_spine(labels).mid is not None
assert not BLOCKED & {name.split(".")[0] for name in sys.modules}
"""


def test_runtime_runs_without_training_packages():
    subprocess.run([sys.executable, "-c", _WITHOUT_TRAINING_PACKAGES], check=True, timeout=120)
