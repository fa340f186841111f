"""Label-map clean-up chosen on val: per class, keep only the largest connected region, fill holes.

Which steps a model applies is decided after training on its val predictions (nnU-Net's rule: a
step is kept where it changes them and that class's val Dice does not fall;
usseg.train.postprocess_choice) and recorded in the contract (``postprocess.largest_component``, ``postprocess.fill_holes``: class
names). The finisher applies them to the model-size label map before anything else reads it;
training decides with these same functions, so what was measured on val is what runs.

Steps run class by class in index order, each class's largest-region step before its hole
filling, on the part of the map that shows the frame (the letterbox's content; padding is left as
it is, so a blob in the padding is never the one kept):

* largest region: the class's 8-connected regions (OpenCV's connectedComponentsWithStats); all but
  the largest become background. Of regions of equal area, the one reached first in raster order
  is kept (the one scipy.ndimage and scikit-image number first).
* fill holes: background pixels enclosed by the class (not 4-connected to the map's border through
  pixels of other labels, as scipy.ndimage.binary_fill_holes defines a hole; OpenCV's floodFill)
  become the class. Pixels of another class inside a hole are a structure of their own and stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from .preprocess import Letterbox

STEPS = ("largest_component", "fill_holes")  # in the order they run for a class


def keep_largest(region: np.ndarray, index: int) -> None:
    """In place: pixels of class ``index`` outside its largest 8-connected region -> background."""
    mask = (region == index).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if count <= 2:  # none, or one region
        return
    areas = stats[1:, cv2.CC_STAT_AREA]
    tied = np.flatnonzero(areas == areas.max()) + 1
    keep = tied[0] if len(tied) == 1 else min(tied, key=lambda k: int(np.argmax(labels.ravel() == k)))
    region[(labels != keep) & (labels != 0)] = 0


def fill_holes(region: np.ndarray, index: int) -> None:
    """In place: background pixels enclosed by class ``index`` -> ``index``."""
    height, width = region.shape
    canvas = np.zeros((height + 2, width + 2), np.uint8)  # a frame of non-class pixels around the map
    canvas[1:-1, 1:-1] = region == index
    cv2.floodFill(canvas, None, (0, 0), 2, flags=4)  # everything 4-connected to the border -> 2
    holes = canvas[1:-1, 1:-1] == 0
    region[holes & (region == 0)] = index


STEP_FUNCTIONS = {"largest_component": keep_largest, "fill_holes": fill_holes}


def cleanup_plan(classes: Sequence[str], largest_component: Sequence[str],
                 fill_holes: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """(class index, step) in the order they run: class by class, largest region before holes."""
    chosen = {"largest_component": set(largest_component), "fill_holes": set(fill_holes)}
    return tuple((i, step) for i, name in enumerate(classes) if i > 0 for step in STEPS if name in chosen[step])


def apply_steps(labels: np.ndarray, plan: Sequence[tuple[int, str]],
                content: tuple[slice, slice] | None = None) -> np.ndarray:
    """``labels`` (uint8 [H, W]) with ``plan``'s steps applied inside ``content`` (rows, columns;
    default the whole map); a new array, or ``labels`` itself when the plan is empty."""
    if not plan:
        return labels
    out = labels.copy()
    region = out[content] if content is not None else out
    work = np.ascontiguousarray(region)
    for index, step in plan:
        STEP_FUNCTIONS[step](work, index)
    region[...] = work
    return out


def content_of(letterbox: Letterbox) -> tuple[slice, slice]:
    """The rows and columns of a model-size map that show the frame."""
    return (slice(letterbox.top, letterbox.top + letterbox.new_h),
            slice(letterbox.left, letterbox.left + letterbox.new_w))


def describe(chosen: Mapping[str, Sequence[str]]) -> str:
    """{step: class names} -> 'largest component: MID, EPI; fill holes: none'."""
    return "; ".join(f"{step.replace('_', ' ')}: {', '.join(chosen.get(step) or ()) or 'none'}" for step in STEPS)
