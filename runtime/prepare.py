"""The preparer: frames -> the model input, written where the engine reads it, and each frame's
letterbox (how the model-size result maps back onto the frame).

One of three, chosen once from the contract, the ``preprocess`` option and the engine:

    host        to_grey8 -> letterbox -> recipe -> min-max on the CPU, into the host input buffer
                (usseg.runtime.preprocess: the same code as training and export verification)
    in-graph    the raw 8-bit grey frame into the host input buffer; the model carries its recipe
                (exported with --graph-preprocess) and takes frames of one size only
    fused-cuda  the recipe's fused CUDA kernels (usseg.runtime.cuda) write the model input straight
                into the bound device input, so nothing is copied before the graph runs; on the
                stream the CUDA provider computes on where the engine shares it (then nothing
                waits between the kernels and the graph: the only wait is the output's readback)

:func:`choose_kernels` settles ``preprocess`` against the model and the session plans before any
session is opened; :func:`make_preparer` builds the preparer once the engine has opened.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np

from .contract import Contract
from .errors import UsageError
from .preprocess import FrameError, Letterbox, preprocess, to_grey8
from .providers import ProviderError, SessionPlan

log = logging.getLogger("usseg.runtime")

PREPROCESS = ("auto", "host", "fused")


@dataclass(frozen=True)
class ModelInput:
    """What a preparer wrote: for which frames, each one's letterbox, and whether it wrote the
    device input itself (the engine then copies nothing in)."""

    frames: Sequence[Any]
    letterboxes: list[Letterbox]
    on_device: bool = False


class HostPreparer:
    """The recipe on the CPU, each frame into its row of the host input buffer."""

    name = "host"

    def __init__(self, contract: Contract) -> None:
        self.recipe, self.height, self.width = contract.recipe, contract.input.height, contract.input.width

    def __call__(self, frames: Sequence[Any], buffers: Any) -> ModelInput:
        letterboxes = [preprocess(frame, self.recipe, self.height, self.width, out=buffers.host_in[i, 0])[1]
                       for i, frame in enumerate(frames)]
        return ModelInput(frames, letterboxes)


class InGraphPreparer:
    """The 8-bit grey frame as it is: the graph letterboxes it and runs the recipe."""

    name = "in-graph"

    def __init__(self, contract: Contract) -> None:
        frame, spec = contract.frame, contract.input
        self.frame_hw = (frame.height, frame.width)
        self.letterbox = Letterbox.fit(frame.height, frame.width, spec.height, spec.width)

    def __call__(self, frames: Sequence[Any], buffers: Any) -> ModelInput:
        for i, frame in enumerate(frames):
            grey = to_grey8(frame)
            if grey.shape != self.frame_hw:
                raise FrameError(f"frame {grey.shape[0]}x{grey.shape[1]}: this model preprocesses in its graph and "
                                 f"takes {self.frame_hw[0]}x{self.frame_hw[1]} frames only")
            buffers.host_in[i, 0] = grey
        return ModelInput(frames, [self.letterbox] * len(frames))


class FusedPreparer:
    """The fused CUDA kernels, run where the engine's session calls run (its CUDA graph's thread),
    writing the frames' inputs into the bound device input: each run of consecutive frames of one
    size in one ``run_batch`` (one launch per kernel for all of them, at the first one's address).
    One kernel set per frame size (the last four kept); a call with a frame size they refuse goes
    the host path whole.
    ``stream``: the kernels' stream (None: each kernel set its own); ``shared``: the session
    computes on it too, so the kernels return without waiting and the graph queues behind them."""

    name = "fused-cuda"

    def __init__(self, contract: Contract, cuda: Any, on_engine_thread: Callable[..., Any], *, stream: Any = None,
                 shared: bool = False) -> None:
        self.contract, self.cuda, self.on_engine_thread = contract, cuda, on_engine_thread
        self.stream, self.synchronize = stream, not shared
        self.input_hw = (contract.input.height, contract.input.width)
        self.host = HostPreparer(contract)
        self._kernels: dict[tuple[int, int], Any] = {}
        self._views: dict[tuple[int, int], Any] = {}

    def __call__(self, frames: Sequence[Any], buffers: Any) -> ModelInput:
        greys = [to_grey8(frame) for frame in frames]
        kernels = [self._kernels_for(grey.shape) for grey in greys]
        if any(k is None for k in kernels):
            return self.host(frames, buffers)
        letterboxes: list[Letterbox] = []
        for k, run in groupby(zip(kernels, greys), key=lambda pair: pair[0]):
            batch = [grey for _, grey in run]
            view = self._view(buffers.device_input(len(letterboxes)), len(batch))
            letterboxes += self.on_engine_thread(k.run_batch, batch, view, None, self.synchronize)
        return ModelInput(frames, letterboxes, on_device=True)

    def _kernels_for(self, frame_hw: tuple[int, int]) -> Any:
        """The kernels for frames of this size, or None where they cannot take it (said once)."""
        if frame_hw not in self._kernels:
            if len(self._kernels) >= 4:
                self._kernels.pop(next(iter(self._kernels)))
            fused, recipe = self.cuda.FusedRecipe, self.contract.recipe
            reason = fused.supports(recipe, frame_hw, self.input_hw)
            if reason:
                log.info("frames of %dx%d go the host path: %s", frame_hw[0], frame_hw[1], reason)
            self._kernels[frame_hw] = None if reason else self.on_engine_thread(fused, recipe, frame_hw, self.input_hw,
                                                                                self.stream)
        return self._kernels[frame_hw]

    def _view(self, address: int, frames: int) -> Any:
        """A device array over ``frames`` frames' inputs of the bound input from ``address``
        ([frames, H, W]), made once per address and count."""
        view = self._views.get((address, frames))
        if view is None:
            if len(self._views) > 64:
                self._views.clear()
            view = self._views[address, frames] = self.cuda.device_array_from_pointer(
                address, (frames, *self.input_hw), np.float32)
        return view


Preparer = HostPreparer | InGraphPreparer | FusedPreparer


# -- the choice ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelChoice:
    """``preprocess`` settled before any session: the fused kernels' module where they can prepare
    this model's input on the planned GPU, else why not; and the stream they run on, which the
    session plans may share (``stream_handle``; None under Numba's simulator)."""

    wanted: str
    cuda: Any = None
    why_not: str = ""
    stream: Any = None

    @property
    def stream_handle(self) -> int | None:
        return None if self.stream is None else int(self.stream)


def choose_kernels(wanted: str, contract: Contract, plans: Sequence[SessionPlan], where: str) -> KernelChoice:
    """Raise UsageError or ProviderError for a ``preprocess`` this model and these plans cannot have."""
    if wanted not in PREPROCESS:
        raise UsageError(f"preprocess {wanted!r}; valid: {list(PREPROCESS)}")
    if contract.frame is not None:
        if wanted != "auto":
            raise UsageError(f"preprocess={wanted!r}: {where} preprocesses in its graph "
                             f"(exported with --graph-preprocess); use preprocess='auto'")
        return KernelChoice(wanted)
    if wanted == "host":
        return KernelChoice(wanted)
    cuda, why = _fused_kernels(contract, plans)
    if wanted == "fused" and cuda is None:
        raise ProviderError(f"preprocess='fused': {why}")
    return KernelChoice(wanted, cuda, why, None if cuda is None else cuda.compute_stream())


def _fused_kernels(contract: Contract, plans: Sequence[SessionPlan]) -> tuple[Any, str]:
    gpu = next((plan for plan in plans if plan.on_gpu), None)
    if gpu is None:
        return None, f"the model runs on {plans[0].expect}, not on a CUDA device"
    if gpu.device_id != 0:
        return None, "the fused kernels run on GPU 0 (Numba's default device) only"
    try:
        cuda = importlib.import_module(".cuda", __package__)
    except Exception as exc:  # noqa: BLE001 - whatever breaks the import, the host path remains
        return None, f"usseg.runtime.cuda cannot be imported ({type(exc).__name__}: {exc})"
    missing = cuda.unavailable_reason()
    if missing:
        return None, missing
    reason = cuda.FusedRecipe.supports(contract.recipe)
    if reason:
        return None, f"the fused kernels do not support recipe {contract.recipe.name!r} ({reason})"
    return cuda, ""


def make_preparer(choice: KernelChoice, contract: Contract, engine: Any) -> Preparer:
    """The preparer for the opened engine: the fused kernels only where it runs on a CUDA device
    (``auto`` may have fallen back to the CPU)."""
    if contract.frame is not None:
        return InGraphPreparer(contract)
    if choice.cuda is not None and engine.on_gpu:
        return FusedPreparer(contract, choice.cuda, engine.call, stream=choice.stream,
                             shared=choice.stream_handle is not None and engine.compute_stream == choice.stream_handle)
    if choice.wanted == "fused":
        raise ProviderError(f"preprocess='fused': the model runs on {engine.provider}, not on a CUDA device")
    if choice.wanted == "auto" and engine.on_gpu:
        log.info("fused preprocessing not used: %s", choice.why_not)
    return HostPreparer(contract)
