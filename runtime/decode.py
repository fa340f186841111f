"""The decoder: one frame's graph output -> its label map at model size.

A graph returns labels ([H, W], uint8 or int64) or class scores ([C, H, W] logits or
probabilities: the per-pixel argmax, a Numba kernel, no int64 temporary). Every engine -- the local
ONNX Runtime session, a Triton server -- feeds the same decoder, so all of them turn the same
output into the same labels. Flip test-time augmentation wraps the engine (:class:`FlipTTA`): its
averaged scores are decoded like any others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .contract import Contract
from .jit import kernel


@kernel
def _argmax(scores, out):
    classes, height, width = scores.shape
    for y in range(height):
        for x in range(width):
            best = scores[0, y, x]
            index = 0
            for c in range(1, classes):
                v = scores[c, y, x]
                if v > best:
                    best = v
                    index = c
            out[y, x] = index


def argmax_labels(scores: np.ndarray, out: np.ndarray) -> np.ndarray:
    """[C, H, W] scores -> ``out`` [H, W] uint8; ties go to the lower class, as numpy's argmax."""
    _argmax(scores, out)
    return out


class Decoder:
    """Output of one frame -> a new uint8 [H, W] label map, owned by the caller: it may be finished
    on another thread while the engine runs the next frame into the same output buffer."""

    def __init__(self, contract: Contract) -> None:
        self.scores = contract.output != "labels"
        self.shape = (contract.input.height, contract.input.width)

    def __call__(self, output: np.ndarray) -> np.ndarray:
        labels = np.empty(self.shape, np.uint8)
        if self.scores:
            return argmax_labels(output, labels)
        np.copyto(labels, output.reshape(self.shape), casting="unsafe")
        return labels


class FlipTTA:
    """The engine run on each frame and on its mirror image, the two scores averaged: an engine
    (same ``run``) for models that output scores. The mirror is prepared by the same preparer, into
    the same buffers, after the frame's own output has been copied out; its content sits in the
    same letterbox columns, reversed, and is reversed back there."""

    def __init__(self, engine: Any, preparer: Any) -> None:
        self.engine, self.preparer = engine, preparer

    def run(self, buffers: Any, model_input: Any) -> np.ndarray:
        scores = self.engine.run(buffers, model_input).astype(np.float32, copy=True)
        mirrors: Sequence[Any] = [np.ascontiguousarray(frame[:, ::-1]) for frame in model_input.frames]
        mirrored = self.engine.run(buffers, self.preparer(mirrors, buffers))
        for i, letterbox in enumerate(model_input.letterboxes):
            cols = slice(letterbox.left, letterbox.left + letterbox.new_w)
            scores[i, ..., cols] = 0.5 * (scores[i, ..., cols] + mirrored[i, ..., cols][..., ::-1])
        return scores
