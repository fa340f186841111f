"""Preprocessing recipes and the letterbox resize: the one implementation used by training,
export verification and the runtime, so that a model sees the same pixels everywhere.

A recipe is a named, fully parameterised chain on 8-bit grey:
denoise (non-local means, bilateral, median or none) -> CLAHE -> unsharp mask -> min-max to [0, 1].
``seed`` is the seed pipeline's enhancement, applied always and deterministically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import cv2
import numpy as np

from .errors import UssegError

DENOISERS = ("nlm", "bilateral", "median", "none")


class FrameError(UssegError, ValueError):
    """A frame the pipeline cannot use (empty, NaN, wrong shape or dtype)."""


@dataclass(frozen=True)
class Recipe:
    name: str = "seed"
    denoise: str = "nlm"
    nlm_h: float = 5.0
    nlm_template: int = 7
    nlm_search: int = 21
    bilateral_d: int = 5
    bilateral_sigma: float = 25.0
    median_ksize: int = 3
    clahe: bool = True
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    unsharp: bool = True
    unsharp_amount: float = 1.5
    unsharp_sigma: float = 3.0

    def __post_init__(self) -> None:
        if self.denoise not in DENOISERS:
            raise ValueError(f"recipe field 'denoise': {self.denoise!r}; valid: {list(DENOISERS)}")
        for key in ("nlm_template", "nlm_search", "median_ksize"):
            value = getattr(self, key)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"recipe field '{key}': {value} must be a positive odd number")
        if self.clahe_tile < 1:
            raise ValueError(f"recipe field 'clahe_tile': {self.clahe_tile} must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "seed": Recipe(),
    "none": Recipe(name="none", denoise="none", clahe=False, unsharp=False),
    # Cheaper denoisers, kept for the ablation and the real-time profile.
    "nlm-small": Recipe(name="nlm-small", nlm_template=5, nlm_search=11),
    "bilateral": Recipe(name="bilateral", denoise="bilateral"),
    "median": Recipe(name="median", denoise="median"),
    # The ablation (docs/ablation.md): each step of the seed recipe switched off on its own, and
    # smaller NLM windows.
    "no-nlm": Recipe(name="no-nlm", denoise="none"),
    "no-clahe": Recipe(name="no-clahe", clahe=False),
    "no-unsharp": Recipe(name="no-unsharp", unsharp=False),
    "nlm-tiny": Recipe(name="nlm-tiny", nlm_template=3, nlm_search=7),
    # The real-time profile's recipe (configs/realtime.json): no denoiser, CLAHE and unsharp kept.
    "realtime": Recipe(name="realtime", denoise="none"),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; valid recipes are {sorted(RECIPES)}") from None


def to_grey8(frame: Any) -> np.ndarray:
    """Any grey / RGB / RGBA frame, uint8, uint16 or float, to contiguous 8-bit grey.

    uint16 keeps its top 8 bits' worth of range (value / 257); float frames in [0, 1] are scaled
    by 255, float frames with a larger range are taken as 0..255 and clipped.
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
    elif frame.dtype == np.uint16:
        grey = (frame.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif frame.dtype.kind == "f":
        if not np.isfinite(frame).all():
            raise FrameError("frame has NaN or infinite values")
        top = float(frame.max()) if frame.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0
        grey = np.clip(frame.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    elif frame.dtype == np.bool_ or frame.dtype.kind in "iu":
        grey = np.clip(frame, 0, 255).astype(np.uint8)
    else:
        raise FrameError(f"frame dtype {frame.dtype} is not supported (uint8, uint16 or float)")
    if grey.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if grey.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        grey = cv2.cvtColor(np.ascontiguousarray(grey), code)
    return np.ascontiguousarray(grey)


def enhance(grey: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Apply the recipe's denoise / CLAHE / unsharp chain to 8-bit grey; returns 8-bit grey."""
    img = grey
    if recipe.denoise == "nlm":
        img = cv2.fastNlMeansDenoising(img, None, h=recipe.nlm_h,
                                       templateWindowSize=recipe.nlm_template,
                                       searchWindowSize=recipe.nlm_search)
    elif recipe.denoise == "bilateral":
        img = cv2.bilateralFilter(img, recipe.bilateral_d, recipe.bilateral_sigma, recipe.bilateral_sigma)
    elif recipe.denoise == "median":
        img = cv2.medianBlur(img, recipe.median_ksize)
    if recipe.clahe:
        clahe = cv2.createCLAHE(clipLimit=recipe.clahe_clip,
                                tileGridSize=(recipe.clahe_tile, recipe.clahe_tile))
        img = clahe.apply(img)
    if recipe.unsharp:
        blur = cv2.GaussianBlur(img, (0, 0), recipe.unsharp_sigma)
        img = cv2.addWeighted(img, recipe.unsharp_amount, blur, 1.0 - recipe.unsharp_amount, 0)
    return img


def minmax(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-image min-max scaling to float32 [0, 1] (a flat image becomes all zeros)."""
    lo, hi = cv2.minMaxLoc(img)[:2]
    if out is None:
        out = np.empty(img.shape, np.float32)
    span = hi - lo
    if span <= 0:
        out[...] = 0.0
    else:
        np.subtract(img, lo, out=out, dtype=np.float32)
        out *= 1.0 / span
    return out


@dataclass(frozen=True)
class Letterbox:
    """Where a frame of ``src`` size sits inside the model input of ``dst`` size."""

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    new_h: int
    new_w: int
    top: int
    left: int

    @classmethod
    def fit(cls, src_h: int, src_w: int, dst_h: int, dst_w: int) -> "Letterbox":
        scale = min(dst_h / src_h, dst_w / src_w)
        new_h = max(1, min(dst_h, int(round(src_h * scale))))
        new_w = max(1, min(dst_w, int(round(src_w * scale))))
        return cls(src_h, src_w, dst_h, dst_w, new_h, new_w, (dst_h - new_h) // 2, (dst_w - new_w) // 2)

    @property
    def scale_y(self) -> float:
        return self.new_h / self.src_h

    @property
    def scale_x(self) -> float:
        return self.new_w / self.src_w

    def resize_image(self, img: np.ndarray) -> np.ndarray:
        """Resize ``img`` to the content size (no padding yet)."""
        if (img.shape[0], img.shape[1]) == (self.new_h, self.new_w):
            return img
        shrink = self.new_h < self.src_h
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)

    def place(self, content: np.ndarray, fill: float = 0) -> np.ndarray:
        out = np.full((self.dst_h, self.dst_w) + content.shape[2:], fill, content.dtype)
        out[self.top:self.top + self.new_h, self.left:self.left + self.new_w] = content
        return out

    def apply_mask(self, mask: np.ndarray) -> np.ndarray:
        """Letterbox a label mask with nearest-neighbour resizing (labels never blend)."""
        small = cv2.resize(mask, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)
        return self.place(small, 0)

    def invert_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map a model-size label map back onto the source frame (nearest neighbour)."""
        crop = labels[self.top:self.top + self.new_h, self.left:self.left + self.new_w]
        return cv2.resize(np.ascontiguousarray(crop), (self.src_w, self.src_h), interpolation=cv2.INTER_NEAREST)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Model-input (x, y) pixel coordinates -> source-frame (x, y) coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] - self.left + 0.5) / self.scale_x - 0.5
        out[..., 1] = (pts[..., 1] - self.top + 0.5) / self.scale_y - 0.5
        return out

    def to_model(self, points: np.ndarray) -> np.ndarray:
        """Source-frame (x, y) coordinates -> model-input coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] + 0.5) * self.scale_x - 0.5 + self.left
        out[..., 1] = (pts[..., 1] + 0.5) * self.scale_y - 0.5 + self.top
        return out


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


def with_overrides(recipe: Recipe, **changes: Any) -> Recipe:
    return replace(recipe, **changes)
