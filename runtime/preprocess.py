"""Frame -> model input: the one implementation used by training, export verification and the
runtime, so that a model sees the same pixels everywhere.

Any frame becomes 8-bit grey (``to_grey8``), is letterboxed to the model size, runs through the
recipe's steps (denoise: non-local means, bilateral, median or none -> CLAHE -> unsharp mask) and
is min-max scaled to [0, 1]. ``seed`` is the seed pipeline's enhancement, applied always and
deterministically. The recipe and its steps live in ``usseg.runtime.recipe``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .errors import UssegError
from .recipe import DENOISERS, RECIPES, Letterbox, Recipe, RecipeError, get_recipe, minmax, with_overrides

__all__ = [
    "DENOISERS", "RECIPES", "FrameError", "Letterbox", "Recipe", "RecipeError", "enhance", "get_recipe", "minmax",
    "preprocess", "to_grey8", "with_overrides",
]


class FrameError(UssegError, ValueError):
    """A frame the pipeline cannot use (empty, NaN, negative, wrong shape or dtype)."""


def to_grey8(frame: Any, bits: int | None = None) -> np.ndarray:
    """Any grey / BGR / BGRA frame (cv2's channel order) to contiguous 8-bit grey.

    Integer frames are scaled by their bit depth, by the same rule in training and at run time:

    - uint8 is taken as it is;
    - any other integer type maps [0, 2**bits - 1] onto [0, 255] (rounded to nearest), where
      ``bits`` is the depth the source declares (a DICOM file's BitsStored) or, when it declares
      none, the bit length of the frame's own maximum, at least 8. A 12-bit frame thus keeps its
      range (its 4096 levels become 256 grey levels), a full-range uint16 frame is value / 257,
      and a wider frame that only holds 0..255 is taken as 8-bit. Values above a declared depth
      saturate at 255;
    - negative values (signed frames) raise FrameError: grey levels are never negative, and an
      offset would be a guess;
    - bool frames become 0 / 255.

    Float frames in [0, 1] are scaled by 255; float frames with a larger range are taken as 0..255
    and clipped.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 3:
        if frame.shape[2] not in (3, 4):
            raise FrameError(f"frame shape {frame.shape}: expected HxW, HxWx3 or HxWx4")
    elif frame.ndim != 2:
        raise FrameError(f"frame shape {frame.shape}: expected HxW, HxWx3 or HxWx4")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise FrameError(f"frame shape {frame.shape}: frame is empty or too small")
    if frame.dtype == np.uint8:
        grey = frame
    elif frame.dtype == np.bool_:
        grey = frame.view(np.uint8) * np.uint8(255)
    elif frame.dtype.kind in "iu":
        grey = _integer_to_grey8(frame, bits)
    elif frame.dtype.kind == "f":
        if not np.isfinite(frame).all():
            raise FrameError("frame has NaN or infinite values")
        top = float(frame.max()) if frame.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0
        # clipped in the frame's own precision first: a float64 value beyond float32's range stays finite
        grey = (np.clip(frame, 0.0, 255.0 / scale).astype(np.float32) * scale + 0.5).astype(np.uint8)
    else:
        raise FrameError(f"frame dtype {frame.dtype} is not supported (integer, bool or float)")
    if grey.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if grey.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        grey = cv2.cvtColor(np.ascontiguousarray(grey), code)
    return np.ascontiguousarray(grey)


def _integer_to_grey8(frame: np.ndarray, bits: int | None) -> np.ndarray:
    """to_grey8's bit-depth rule for integer frames other than uint8."""
    if bits is not None and (not isinstance(bits, (int, np.integer)) or isinstance(bits, bool)
                             or not 1 <= bits <= 64):
        raise FrameError(f"frame bit depth {bits!r} must be an integer in [1, 64]")
    lo, hi = int(frame.min()), int(frame.max())
    if lo < 0:
        raise FrameError(f"frame has negative values (minimum {lo}); grey levels must be >= 0")
    depth = int(bits) if bits is not None else max(8, hi.bit_length())
    top = (1 << depth) - 1
    if hi > top:  # only with a declared depth; top then fits the frame's dtype
        frame = np.minimum(frame, frame.dtype.type(top))
    return _scaled_to_grey8(frame, depth)


def _scaled_to_grey8(frame: np.ndarray, depth: int) -> np.ndarray:
    """round(v * 255 / top) for values 0..top = 2**depth - 1, exactly, without a float64 copy of
    the frame: floor((510 v + top) / (2 top)) in integers (top is odd, so no value falls on a tie).

    Up to 16 bits through a table of every level (the output is the only frame-sized array), up to
    55 bits in place in one unsigned copy that holds 511 * top; deeper values (64-bit frames only)
    in float64, the frame's own size."""
    top = (1 << depth) - 1
    if depth <= 16:
        levels = np.arange(top + 1, dtype=np.uint32)
        return ((levels * 510 + top) // (2 * top)).astype(np.uint8)[frame]
    if depth > 55:
        return (frame.astype(np.float64) * (255.0 / top) + 0.5).astype(np.uint8)
    work = np.uint32 if depth <= 23 else np.uint64
    values = frame.astype(work)
    values *= work(510)
    values += work(top)
    values //= work(2 * top)
    return values.astype(np.uint8)


def enhance(grey: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Run the recipe's steps (denoise / CLAHE / unsharp) on 8-bit grey; returns 8-bit grey."""
    img = grey
    for step in recipe.steps:
        img = step.host(img)
    return img


def preprocess(frame: Any, recipe: Recipe, height: int, width: int,
               out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Frame -> float32 [height, width] model input in [0, 1], plus the letterbox to map back.

    The recipe runs on the resized content only, so the padding never enters CLAHE tiles or the
    min-max range, and the cost depends on the model size, not the frame size.
    """
    grey = to_grey8(frame)
    box = Letterbox.fit(grey.shape[0], grey.shape[1], height, width)
    content = enhance(box.resize_image(grey), recipe)
    if out is None:
        out = np.zeros((height, width), np.float32)
    else:
        out[...] = 0.0
    minmax(content, out=out[box.top:box.top + box.new_h, box.left:box.left + box.new_w])
    return out, box

