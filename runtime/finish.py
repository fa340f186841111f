"""The finisher: a model-size label map -> the frame's Result.

The post-processing the contract names (``spine``: the seed's gap fixing, lines, box and
no-midline rule, runtime/postprocess/; ``none``: the label map as it is) runs at model size, then
labels, masks and geometry are mapped back onto the frame through its letterbox; the readouts
(runtime/measurements.py) are computed from that geometry when asked for. A pure function of
(labels, letterbox, contract, spacing): it keeps no state between frames, so it may run on any
thread, beside the engine's work on the next frame.

Before any kind's post-processing, the label-map clean-up chosen on val runs at model size
(runtime/cleanup.py; none unless the contract lists it). For ``spine`` it runs before the seed's
rules: those rules read the map whose val Dice the clean-up raised, and ``labels`` (what
``usseg evaluate`` scores) is that map; with no steps chosen the seed's output is unchanged.

Mapping back costs as much as the post-processing itself when done plane by plane (four
nearest-neighbour resizes and three bool copies of a 480x640 frame), so it is done once:
- no resize (the content is the frame's size, the model size equals the frame size): the labels
  and masks are the model-size arrays themselves, or views of their letterbox content, the masks
  as bool views of the 0/1 planes; nothing is copied;
- otherwise the labels (2 bits) and the three masks (a bit each) are packed into one 8-bit plane,
  which OpenCV's nearest-neighbour resize maps exactly as it maps each plane alone (it copies
  values, the index maps depend on the sizes only), and unpacked into the frame-size labels and
  one bool array of the masks in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .cleanup import apply_steps, cleanup_plan, content_of
from .contract import Contract
from .jit import kernel
from .postprocess import postprocess_spine
from .postprocess import warmup as warm_postprocess
from .preprocess import Letterbox
from .result import Result


@kernel
def _pack(labels, masks, top, left, out):
    """out = label | mask0 << 2 | mask1 << 3 | mask2 << 4 over the letterbox content (labels 0..3)."""
    height, width = out.shape
    for y in range(height):
        for x in range(width):
            out[y, x] = (labels[top + y, left + x] | (masks[0, top + y, left + x] << 2)
                         | (masks[1, top + y, left + x] << 3) | (masks[2, top + y, left + x] << 4))


@kernel
def _unpack(packed, labels, masks):
    """The inverse of ``_pack`` at frame size: labels, and the masks as 0/1 bytes."""
    height, width = packed.shape
    for y in range(height):
        for x in range(width):
            v = packed[y, x]
            labels[y, x] = v & 3
            masks[0, y, x] = (v >> 2) & 1
            masks[1, y, x] = (v >> 3) & 1
            masks[2, y, x] = (v >> 4) & 1


def _resizes(letterbox: Letterbox) -> bool:
    return (letterbox.new_h, letterbox.new_w) != (letterbox.src_h, letterbox.src_w)


def _content(plane: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """The letterbox content of a model-size plane ([..., H, W]), a view (the array itself when
    there is no padding)."""
    if (letterbox.new_h, letterbox.new_w) == plane.shape[-2:]:
        return plane
    return plane[..., letterbox.top:letterbox.top + letterbox.new_h, letterbox.left:letterbox.left + letterbox.new_w]


def labels_to_frame(labels: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """A model-size label map on the frame: nearest neighbour, or a view where nothing is resized."""
    if not _resizes(letterbox):
        return _content(labels, letterbox)
    return letterbox.invert_labels(labels)


def spine_to_frame(labels: np.ndarray, masks: np.ndarray, letterbox: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """Model-size labels (0..3) and 0/1 masks (uint8 [3, H, W]) on the frame: labels uint8 and
    masks bool [3, h, w], views where nothing is resized, else one resize of the packed planes."""
    if not _resizes(letterbox):
        return _content(labels, letterbox), _content(masks, letterbox).view(bool)
    packed = np.empty((letterbox.new_h, letterbox.new_w), np.uint8)
    _pack(labels, masks, letterbox.top, letterbox.left, packed)
    packed = cv2.resize(packed, (letterbox.src_w, letterbox.src_h), interpolation=cv2.INTER_NEAREST)
    frame_labels = np.empty(packed.shape, np.uint8)
    frame_masks = np.empty((3,) + packed.shape, np.uint8)
    _unpack(packed, frame_labels, frame_masks)
    return frame_labels, frame_masks.view(bool)


@dataclass(frozen=True)
class Finisher:
    """``finisher(labels, letterbox) -> Result`` for one model and pixel spacing (mm, or None).
    The Result's labels and masks may be views of ``labels`` (the caller hands it over)."""

    contract: Contract
    spacing_mm: float | None = None

    def __call__(self, labels: np.ndarray, letterbox: Letterbox) -> Result:
        c = self.contract
        if self.cleanup:  # steps chosen on val (runtime/cleanup.py), for any kind
            labels = apply_steps(labels, self.cleanup, content_of(letterbox))
        if c.postprocess.kind != "spine":
            frame_labels = labels_to_frame(labels, letterbox)
            masks = {name: frame_labels == i for i, name in enumerate(c.classes) if i > 0}
            return Result(frame_labels, masks, {}, None, spacing_mm=self.spacing_mm)
        geo = postprocess_spine(labels, c.postprocess)
        frame_labels, frame_masks = spine_to_frame(labels, geo.masks, letterbox)
        masks = {name: frame_masks[i] for i, name in enumerate(c.classes[1:])}
        lines = {name: None if pts is None else letterbox.to_frame(pts) for name, pts in (("MID", geo.mid),
                                                                                         ("EPI", geo.epi))}
        vtb = None if geo.vtb is None else letterbox.to_frame(geo.vtb)
        return Result(frame_labels, masks, lines, vtb, spacing_mm=self.spacing_mm)

    @cached_property
    def cleanup(self) -> tuple[tuple[int, str], ...]:
        """The contract's clean-up steps, (class index, step) in the order they run; () for none."""
        p = self.contract.postprocess
        return cleanup_plan(self.contract.classes, p.largest_component, p.fill_holes)

    def warmup(self) -> None:
        """Compile or load the post-processing and mapping kernels now rather than on the first frame."""
        if self.contract.postprocess.kind == "spine":
            warm_postprocess()
            small = Letterbox.fit(4, 4, 2, 2)
            spine_to_frame(np.zeros((2, 2), np.uint8), np.zeros((3, 2, 2), np.uint8), small)
