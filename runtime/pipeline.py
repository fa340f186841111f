"""The frame pipeline every backend shares: prepare the model input from a frame, turn the
graph's output into labels, post-process and map everything back to the frame. The local
Segmenter and the Triton client differ only in how the graph runs (``_infer``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .contract import Contract
from .labels import argmax_labels
from .preprocess import FrameError, Letterbox, preprocess, to_grey8
from .result import Result


def model_input_shape(contract: Contract, batch: int = 1) -> tuple[tuple[int, ...], type]:
    """Shape and dtype of what the graph takes: the raw frame (in-graph preprocessing) or the
    preprocessed float32 image."""
    if contract.frame is not None:
        return (batch, 1, contract.frame.height, contract.frame.width), np.uint8
    spec = contract.input
    return (batch, spec.channels, spec.height, spec.width), np.float32


def prepare(frame: Any, contract: Contract, out: np.ndarray) -> Letterbox:
    """Write what the graph takes for ``frame`` into ``out`` ([H, W] of the model input buffer);
    returns the letterbox that maps results back to the frame."""
    spec = contract.input
    if contract.frame is None:
        return preprocess(frame, contract.recipe, spec.height, spec.width, out=out)[1]
    grey = to_grey8(frame)
    f = contract.frame
    if grey.shape != (f.height, f.width):
        raise FrameError(f"frame {grey.shape[0]}x{grey.shape[1]}: this model preprocesses in its graph and takes "
                         f"{f.height}x{f.width} frames only")
    out[...] = grey
    return Letterbox.fit(f.height, f.width, spec.height, spec.width)


def labels_from_output(output: np.ndarray, contract: Contract, out: np.ndarray) -> np.ndarray:
    """One frame's graph output ([H, W] labels or [C, H, W] scores) -> ``out`` uint8 [H, W] labels.

    Shared by every inference backend (this Segmenter, the Triton client) so that all of them turn
    the same output into the same labels.
    """
    if contract.output == "labels":
        np.copyto(out, output.reshape(out.shape), casting="unsafe")
    else:
        argmax_labels(output, out)
    return out


def finish(labels: np.ndarray, box: Letterbox, contract: Contract, spacing_mm: float | None = None) -> Result:
    """Post-process model-size labels, then map labels, masks and geometry back to the frame.

    A function rather than a method so that a remote backend (usseg.runtime.triton_client) runs
    exactly this code client-side.
    """
    frame_labels = box.invert_labels(labels)
    lines: dict[str, np.ndarray | None] = {}
    vtb = None
    if contract.postprocess.kind == "spine":
        from .postprocess import postprocess_spine

        geo = postprocess_spine(labels, contract.postprocess)
        masks = {name: box.invert_labels(geo.masks[i]).astype(bool) for i, name in enumerate(contract.classes[1:])}
        for name, pts in (("MID", geo.mid), ("EPI", geo.epi)):
            lines[name] = None if pts is None else box.to_frame(pts)
        vtb = None if geo.vtb is None else box.to_frame(geo.vtb)
    else:
        masks = {name: frame_labels == i for i, name in enumerate(contract.classes) if i > 0}
    return Result(frame_labels, masks, lines, vtb, spacing_mm=spacing_mm)


class FramePipeline:
    """Frame in, Result out: preprocessing into a reused input buffer (``_prepare_frame``), an
    inference backend (``_infer``, given by the subclass), then post-processing mapped back to the frame."""

    contract: Contract
    spacing_mm: float | None
    _input: np.ndarray

    def _prepare_frame(self, frame: Any) -> Letterbox:
        return prepare(frame, self.contract, self._input[0, 0])

    def _infer(self) -> np.ndarray:
        """Run the graph on the prepared input; return the [H, W] label map at model size."""
        raise NotImplementedError

    def __call__(self, frame: Any) -> Result:
        t0 = time.perf_counter()
        box = self._prepare_frame(frame)
        t1 = time.perf_counter()
        labels = self._infer()
        t2 = time.perf_counter()
        result = finish(labels, box, self.contract, self.spacing_mm)
        t3 = time.perf_counter()
        result.timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                          "postprocess": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return result

    def stream(self, source: Any, **kwargs: Any):
        """``for item in seg.stream(source): ...`` -- see usseg.runtime.stream.stream."""
        from .stream import stream

        return stream(self, source, **kwargs)

    def run_stream(self, source: Any, callback, **kwargs: Any):
        """Callback form of :meth:`stream`; returns the stream statistics."""
        from .stream import run_stream

        return run_stream(self, source, callback, **kwargs)
