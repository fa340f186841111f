import math

import cv2
import numpy as np
import pytest

from usseg.runtime.measurements import LABELS, Readout, measure
from usseg.runtime.postprocess import postprocess_spine
from usseg.runtime.result import Result
from usseg.runtime.stream import GeometrySmoother

H, W = 200, 240
SPACING = 0.2  # mm per pixel


def result_from(lines, box=None, shape=(H, W), spacing=None, masks=None) -> Result:
    return Result(np.zeros(shape, np.uint8), masks or {}, lines, None if box is None else np.asarray(box, float),
                  spacing_mm=spacing)


def drawn_labels(mid, epi, vtb) -> np.ndarray:
    """A label map drawn the seed's way (10-px lines, filled box, later shapes over earlier)."""
    labels = np.zeros((H, W), np.uint8)
    cv2.line(labels, *mid, 1, 10)
    cv2.rectangle(labels, *vtb, 2, cv2.FILLED)
    cv2.line(labels, *epi, 3, 10)
    return labels


def geometry_result(labels: np.ndarray, spacing: float | None) -> Result:
    """The runtime's post-processing on a drawn label map, as the finisher (runtime/finish.py) builds
    its Result for a frame of the model's own size."""
    geo = postprocess_spine(labels)
    masks = {name: geo.masks[i].astype(bool) for i, name in enumerate(("MID", "VTB", "EPI"))}
    return Result(labels, masks, {"MID": geo.mid, "EPI": geo.epi}, geo.vtb, spacing_mm=spacing)


@pytest.mark.parametrize("mid_top_x, mid_bottom_x", [(130, 130), (124, 136), (136, 126)])
def test_readouts_from_drawn_geometry_are_within_one_pixel_of_the_drawn_mm(mid_top_x, mid_bottom_x):
    # Known positions in mm at 0.2 mm per pixel: EPI 16 mm deep, VTB top 28 mm deep, the midline
    # centred 2.1 mm right of the image centre. The midline ends above the box, as the interspinous
    # line does (the seed's gap fixing gives the box the midline pixels next to it).
    epi_y, vtb_top = 16.0 / SPACING, 28.0 / SPACING
    labels = drawn_labels(((mid_top_x, 20), (mid_bottom_x, 120)), ((100, int(epi_y)), (160, int(epi_y))),
                          ((90, int(vtb_top)), (170, 170)))
    r = geometry_result(labels, SPACING)
    m = r.measurements
    assert list(m) == list(LABELS)
    assert {v.unit for k, v in m.items() if k != "midline_angle"} == {"mm"} and m["midline_angle"].unit == "deg"
    assert m["epidural_depth"].value == pytest.approx(16.0, abs=SPACING)
    assert m["vertebral_body_depth"].value == pytest.approx(28.0, abs=SPACING)
    centre_mm = ((mid_top_x + mid_bottom_x) / 2 - (W - 1) / 2) * SPACING
    assert m["midline_offset"].value == pytest.approx(centre_mm, abs=SPACING)
    # The probabilistic Hough transform works in 1-degree steps.
    drawn_angle = math.degrees(math.atan2(mid_bottom_x - mid_top_x, 100))
    assert m["midline_angle"].value == pytest.approx(drawn_angle, abs=1.0)


def test_without_a_spacing_readouts_are_in_pixels_and_say_so():
    labels = drawn_labels(((120, 20), (120, 110)), ((90, 60), (150, 60)), ((80, 130), (160, 160)))
    m = geometry_result(labels, None).measurements
    assert m["epidural_depth"] == Readout(pytest.approx(60, abs=1), "px")
    assert m["vertebral_body_depth"].unit == "px" and m["vertebral_body_depth"].value == pytest.approx(130, abs=1)
    assert m["midline_offset"].unit == "px" and m["midline_offset"].value == pytest.approx(0.5, abs=1)
    assert m["midline_angle"].unit == "deg"


def test_exact_values_on_given_geometry():
    mid = np.array([[100.0, 150.0], [120.0, 50.0]])     # deeper end to the left: negative angle
    epi = np.array([[80.0, 40.0], [140.0, 60.0]])       # midpoint 50 px deep
    box = np.array([[60.0, 120.0], [160.0, 120.0], [160.0, 160.0], [60.0, 160.0]])
    m = measure({"MID": mid, "EPI": epi}, box, (H, W), 0.5)
    assert m["epidural_depth"].value == pytest.approx(25.0)
    assert m["vertebral_body_depth"].value == pytest.approx(60.0)
    assert m["midline_angle"].value == pytest.approx(-math.degrees(math.atan2(20, 100)))
    assert m["midline_offset"].value == pytest.approx((110 - 119.5) * 0.5)
    # The skin line below the top of the frame (a header band): depths count from it.
    assert measure({"MID": mid, "EPI": epi}, box, (H, W), 0.5, skin_y=10)["epidural_depth"].value == pytest.approx(20)
    # A rotated box: the upper side is the one whose midpoint is shallowest.
    rot = np.array([[100.0, 100.0], [140.0, 110.0], [130.0, 150.0], [90.0, 140.0]])
    assert measure({"MID": mid}, rot, (H, W))["vertebral_body_depth"].value == pytest.approx(105.0)


def test_anisotropic_spacing_scales_depth_by_rows_and_offset_by_columns():
    mid = np.array([[130.0, 0.0], [140.0, 100.0]])
    m = measure({"MID": mid, "EPI": np.array([[0.0, 50.0], [10.0, 50.0]])}, None, (H, W), (0.1, 0.3))
    assert m["epidural_depth"].value == pytest.approx(5.0)
    assert m["midline_offset"].value == pytest.approx((135 - 119.5) * 0.3)
    assert m["midline_angle"].value == pytest.approx(math.degrees(math.atan2(10 * 0.3, 100 * 0.1)))


def test_missing_structures_have_no_value_and_non_spine_results_no_readouts():
    m = measure({"MID": None, "EPI": None}, None, (H, W), 0.2)
    assert all(r.value is None for r in m.values()) and m["epidural_depth"].text() == "-"
    assert result_from({}, spacing=0.2).measurements == {}
    assert result_from({}).to_dict()["measurements"] == {}


@pytest.mark.parametrize("kwargs, match", [
    ({"spacing_mm": 0.0}, "spacing"), ({"spacing_mm": float("nan")}, "spacing"), ({"spacing_mm": (0.1,)}, "spacing"),
    ({"lines": {"MID": np.zeros((3, 2))}}, "MID"), ({"lines": {"EPI": np.full((2, 2), np.inf)}}, "EPI"),
    ({"box": np.zeros((2, 2))}, "VTB"), ({"shape": (0,)}, "shape"),
])
def test_bad_geometry_or_spacing_is_refused_with_its_name(kwargs, match):
    args = {"lines": {"MID": None}, "box": None, "shape": (H, W), "spacing_mm": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        measure(args["lines"], args["box"], args["shape"], args["spacing_mm"])


def test_to_dict_carries_readouts_with_units_rounded():
    lines = {"MID": np.array([[120.0, 10.0], [120.0, 190.0]]), "EPI": np.array([[90.0, 33.333], [150.0, 33.333]])}
    r = result_from(lines, spacing=0.3)
    d = r.to_dict()["measurements"]
    assert d["epidural_depth"] == {"value": 10.0, "unit": "mm"}
    assert d["vertebral_body_depth"] == {"value": None, "unit": "mm"}
    assert d["midline_angle"] == {"value": 0.0, "unit": "deg"}
    assert d["midline_offset"] == {"value": 0.15, "unit": "mm"}


def test_smoothing_the_geometry_smooths_the_readouts():
    smoother = GeometrySmoother(0.5)
    mid = np.array([[120.0, 10.0], [120.0, 190.0]])
    first = smoother(result_from({"MID": mid.copy(), "EPI": np.array([[90.0, 40.0], [150.0, 40.0]])}, spacing=0.5))
    assert first.measurements["epidural_depth"].value == pytest.approx(20.0)
    second = smoother(result_from({"MID": mid + [10.0, 0.0], "EPI": np.array([[90.0, 80.0], [150.0, 80.0]])},
                                  spacing=0.5))
    # Half way between 40 and 80 px deep, and between offsets of 0.5 and 10.5 px.
    assert second.measurements["epidural_depth"].value == pytest.approx(30.0)
    assert second.measurements["midline_offset"].value == pytest.approx(5.5 * 0.5)
    assert second.to_dict()["measurements"]["epidural_depth"]["value"] == pytest.approx(30.0)


def test_overlay_writes_the_readouts_and_marks_the_measured_points():
    from usseg.runtime.overlay import draw_overlay, readout_lines

    labels = drawn_labels(((124, 20), (136, 120)), ((100, 80), (160, 80)), ((90, 140), (170, 170)))
    r = geometry_result(labels, SPACING)
    assert readout_lines(r.measurements) == ["EPI depth 16.0 mm", "VTB depth 28.0 mm", "MID angle 6.9 deg",
                                             "MID offset 2.1 mm"]
    frame = np.full((H, W), 40, np.uint8)
    plain = result_from({}, shape=(H, W))
    with_readouts, without = draw_overlay(frame, r), draw_overlay(frame, plain)
    corner = (slice(H - 70, H), slice(0, 110))
    # White text on the darkened band in the lower left corner; nothing there without readouts.
    assert (with_readouts[corner] > 200).all(axis=2).sum() > 100
    assert (without[corner] == 40).all()
    # A white ring around the EPI midpoint (130, 80).
    ring = with_readouts[74:87, 124:137]
    assert (ring > 200).all(axis=2).any()
