"""The seed's rule-based spine post-processing, fast enough for a live loop.

From a label map (0 background, 1 MID, 2 VTB, 3 EPI) it returns one mask per class after the
seed's gap fixing, the MID and EPI lines and the VTB box, following the seed step by step:

* gap fixing: MID takes the EPI pixels inside its dilation, VTB takes the MID pixels inside its
  dilation (both from the original masks); EPI is unchanged;
* a line (MID, EPI): open then close (3x3, twice each), the largest external contour with
  area > ``min_line_area``, filled, skeletonised, probabilistic Hough, the longest segment;
* the box (VTB): the largest external contour with area >= ``min_box_area``, its min-area rect;
* no MID line -> nothing at all (all geometry None, all masks empty).

The class planes are packed 64 pixels to a word as the labels are split (a few vector
instructions per 64 labels), and every step after works on those words, only where its class is:
gap fixing and the open/close are word-wide dilations and erosions with OpenCV's borders, the
contours come from the runs of set pixels and OpenCV's own border-following rule (so their areas
are ``cv2.contourArea``'s and the VTB contour's points are ``cv2.findContours``'), and the chosen
contour is filled as ``cv2.drawContours`` fills it. The skeleton and the Hough transform are Numba
kernels that reproduce scikit-image's ``skeletonize`` and OpenCV's ``HoughLinesP`` bit for bit, so
the output equals the seed's exactly. That matters: HoughLinesP visits points in a pseudo-random
order and, on a tilted skeleton, its walk along the 1-degree angle steps off the line after a few
dozen pixels, so the seed's end points depend on every skeleton pixel and on that order. A line
fitted any other way (principal axis, extreme projections) lands tens of pixels from the seed's
end points on most tilted lines. Each line is one kernel call from its class's words to its end
points; the box is one kernel call and OpenCV's ``minAreaRect``.

Scratch buffers are kept per thread and frame size; ``out=`` takes the masks, so a live loop
allocates nothing large per frame. ``warmup()`` compiles or loads every kernel up front.

Modules: ``labelmap`` (class values, result type, input check), ``split`` (class planes, byte
and packed, and gap fixing), ``bitplane`` (packed-plane morphology), ``contours`` (the largest
external contour, its area, points and fill), ``thinning`` (Zhang-Suen), ``hough``
(HoughLinesP), ``shapes`` (a class's line or box in one call), ``spine`` (the rules per frame). Imports numpy, cv2 and numba only (no torch,
scikit-image or scipy).
"""

from .hough import (
    HOUGH_COS,
    HOUGH_MAX_LINE_GAP,
    HOUGH_MIN_LINE_LENGTH,
    HOUGH_RHO,
    HOUGH_SIN,
    HOUGH_THETA,
    HOUGH_THRESHOLD,
    hough_rho_bins,
)
from .labelmap import EPI, LABEL_EPI, LABEL_MID, LABEL_VTB, MID, VTB, SpineGeometry, validate_labels
from .spine import (
    MORPH_ITERATIONS,
    MORPH_KERNEL,
    postprocess_spine,
    probabilistic_hough,
    skeletonize,
    warmup,
)
from .thinning import THINNING_TABLE

__all__ = [
    "EPI",
    "HOUGH_COS",
    "HOUGH_MAX_LINE_GAP",
    "HOUGH_MIN_LINE_LENGTH",
    "HOUGH_RHO",
    "HOUGH_SIN",
    "HOUGH_THETA",
    "HOUGH_THRESHOLD",
    "LABEL_EPI",
    "LABEL_MID",
    "LABEL_VTB",
    "MID",
    "MORPH_ITERATIONS",
    "MORPH_KERNEL",
    "THINNING_TABLE",
    "VTB",
    "SpineGeometry",
    "hough_rho_bins",
    "postprocess_spine",
    "probabilistic_hough",
    "skeletonize",
    "validate_labels",
    "warmup",
]
