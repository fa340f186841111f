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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .cleanup import apply_steps, cleanup_plan, content_of
from .contract import Contract
from .postprocess import postprocess_spine
from .postprocess import warmup as warm_postprocess
from .preprocess import Letterbox
from .result import Result


@dataclass(frozen=True)
class Finisher:
    """``finisher(labels, letterbox) -> Result`` for one model and pixel spacing (mm, or None)."""

    contract: Contract
    spacing_mm: float | None = None

    def __call__(self, labels: np.ndarray, letterbox: Letterbox) -> Result:
        c = self.contract
        if self.cleanup:  # steps chosen on val (runtime/cleanup.py), for any kind
            labels = apply_steps(labels, self.cleanup, content_of(letterbox))
        frame_labels = letterbox.invert_labels(labels)
        if c.postprocess.kind != "spine":
            masks = {name: frame_labels == i for i, name in enumerate(c.classes) if i > 0}
            return Result(frame_labels, masks, {}, None, spacing_mm=self.spacing_mm)
        geo = postprocess_spine(labels, c.postprocess)
        masks = {name: letterbox.invert_labels(geo.masks[i]).astype(bool) for i, name in enumerate(c.classes[1:])}
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
        """Compile or load the post-processing kernels now rather than on the first frame."""
        if self.contract.postprocess.kind == "spine":
            warm_postprocess()
