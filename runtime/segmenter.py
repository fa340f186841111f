"""Segmenter: an exported usseg model on ONNX Runtime, frame in, labels and geometry out.

    seg = Segmenter("model.onnx", device="auto")
    result = seg(frame)          # any grey / RGB(A) frame, uint8 / uint16 / float, any size
                                 # (models exported with --graph-preprocess: their one frame size)
    result.labels, result.masks, result.lines, result.box, result.timings

Buffers are allocated once: the model input is written in place by the preprocessing, and the
output is bound to a preallocated array (host) or device buffer (CUDA) through IO binding.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnxruntime as ort

from .contract import METADATA_KEY, Contract, ContractError
from .errors import UssegError
from .labels import argmax_labels
from .preprocess import FrameError, Letterbox, preprocess, to_grey8
from .providers import (
    CPU,
    CUDA,
    TRT,
    ProviderError,
    default_cache_dir,
    plan_providers,
    preload_gpu_libraries,
)
from .result import Result

log = logging.getLogger("usseg.runtime")


class ModelError(UssegError, ValueError):
    """A model file that is missing, unreadable, or carries no valid usseg contract."""


def _session(path: Path, providers: list, threads: int | None, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own types for a corrupt file
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load this model ({first})") from None


def read_contract(session: ort.InferenceSession, path: Path) -> Contract:
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ModelError(f"{path}: no usseg contract in the model metadata (key '{METADATA_KEY}'); "
                         f"export it with usseg-export")
    try:
        return Contract.from_json(meta[METADATA_KEY])
    except ContractError as exc:
        raise ModelError(f"{path}: {exc}") from None


def peek_contract(path: Path) -> Contract:
    """The contract of a model file, read through an unoptimised CPU session."""
    return read_contract(_session(path, [CPU], None, optimize=False), path)


def _check_graph(session: ort.InferenceSession, contract: Contract, path: Path) -> None:
    inp = session.get_inputs()[0]
    spec, frame = contract.input, contract.frame
    name, dims, dtype = spec.name, [spec.channels, spec.height, spec.width], "tensor(float)"
    if frame is not None:
        name, dims, dtype = frame.name, [1, frame.height, frame.width], "tensor(uint8)"
    if inp.name != name or list(inp.shape[1:]) != dims or inp.type != dtype:
        raise ModelError(f"{path}: graph input {inp.name} {inp.shape} {inp.type} does not match the contract's "
                         f"{name} [{spec.batch}, {', '.join(map(str, dims))}] {dtype}")


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
    """Frame in, Result out: preprocessing into a reused input buffer, an inference backend
    (``_infer``, given by the subclass), then post-processing mapped back to the frame."""

    contract: Contract
    spacing_mm: float | None
    _input: np.ndarray

    def _infer(self) -> np.ndarray:
        """Run the graph on ``self._input``; return the [H, W] label map at model size."""
        raise NotImplementedError

    def __call__(self, frame: Any) -> Result:
        t0 = time.perf_counter()
        box = prepare(frame, self.contract, self._input[0, 0])
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


class Segmenter(FramePipeline):
    def __init__(self, model_path: str | Path, device: str = "auto", *, spacing_mm: float | None = None,
                 cache_dir: str | Path | None = None, threads: int | None = None, cuda_graph: bool = True,
                 warmup: bool = True) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        if spacing_mm is not None and not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
        self.spacing_mm = spacing_mm
        self.device, self._threads = device, threads
        self._cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if device != "cpu":
            preload_gpu_libraries()
        # In-graph preprocessing reproduces OpenCV with exact integer sums: the GPU providers get
        # exact options (no TF32, no TensorRT), decided before the first GPU session is built.
        gpu = device != "cpu" and any(p in ort.get_available_providers() for p in (CUDA, TRT))
        self._exact = gpu and peek_contract(self.path).frame is not None
        self._batch: ort.InferenceSession | None = None
        self._open(cuda_graph)
        self.contract = read_contract(self.session, self.path)
        _check_graph(self.session, self.contract, self.path)
        self._allocate()
        if warmup:
            self.warmup()

    # -- set-up -----------------------------------------------------------------------------
    def _open(self, cuda_graph: bool) -> None:
        plan = plan_providers(self.device, self._cache_dir, cuda_graph, exact=self._exact)
        for note in plan.notes:
            log.info("provider skipped: %s", note)
        self.session = _session(self.path, plan.providers, self._threads)
        active = self.session.get_providers()
        planned = [name for name, _ in plan.providers]
        for name in planned:
            if name not in active and name != CPU:
                reason = f"{name} was requested but did not start (its libraries are missing or the model is unsupported)"
                if self.device == {TRT: "tensorrt", CUDA: "cuda"}.get(name):
                    raise ProviderError(f"device {self.device!r}: {reason}; active providers: {active}")
                log.info("provider skipped: %s", reason)
        self.provider = active[0]
        self.on_gpu = self.provider in (CUDA, TRT)
        self.cuda_graph = cuda_graph and self.provider == CUDA
        log.info("usseg runtime: %s on %s", self.path.name, self.provider)

    def _allocate(self) -> None:
        c = self.contract
        h, w = c.input.height, c.input.width
        out = self.session.get_outputs()[0]
        self._out_dtype = np.uint8 if "uint8" in out.type else np.int64 if "int64" in out.type else np.float32
        out_shape = (1, h, w) if c.output == "labels" else (1, c.num_classes, h, w)
        in_shape, in_dtype = model_input_shape(c)
        self._input = np.zeros(in_shape, in_dtype)
        self._output = np.zeros(out_shape, self._out_dtype)
        self._labels = np.zeros((h, w), np.uint8)
        self._binding = self.session.io_binding()
        input_name = c.frame.name if c.frame is not None else c.input.name
        if self.on_gpu:
            self._dev_in = ort.OrtValue.ortvalue_from_shape_and_type(in_shape, in_dtype, "cuda", 0)
            self._dev_out = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, self._out_dtype, "cuda", 0)
            self._binding.bind_ortvalue_input(input_name, self._dev_in)
            self._binding.bind_ortvalue_output(c.output_name, self._dev_out)
        else:
            self._binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(self._input))
            self._binding.bind_ortvalue_output(c.output_name, ort.OrtValue.ortvalue_from_numpy(self._output))

    def warmup(self, runs: int = 2) -> None:
        """Run the graph (and compile the post-processing kernels) before the first real frame."""
        try:
            for _ in range(runs):
                self._infer()
        except Exception as exc:
            if not self.cuda_graph:
                raise
            log.info("CUDA graph capture failed (%s); running without CUDA graphs", str(exc).splitlines()[0])
            self._open(cuda_graph=False)
            self._allocate()
            self._infer()
        if self.contract.postprocess.kind == "spine":
            from .postprocess import warmup as warm_post

            warm_post()

    # -- per frame ----------------------------------------------------------------------------
    def _infer(self) -> np.ndarray:
        """Run on self._input; returns the [H, W] label map at model size (a reused buffer)."""
        if self.on_gpu:
            self._dev_in.update_inplace(self._input)
            self.session.run_with_iobinding(self._binding)
            output = self._dev_out.numpy()
        else:
            self.session.run_with_iobinding(self._binding)
            output = self._output
        return labels_from_output(output[0], self.contract, self._labels)

    def batch(self, frames: Iterable[Any]) -> list[Result]:
        """Segment several frames; one graph call per frame (fixed batch) or one for all (dynamic:
        the multi-frame mode, one host-to-device copy of the whole batch)."""
        frames = list(frames)
        if self.contract.input.batch is not None or len(frames) < 2:
            return [self(f) for f in frames]
        session = self._batch_session() if self.cuda_graph else self.session
        spec, c = self.contract.input, self.contract
        t0 = time.perf_counter()
        shape, dtype = model_input_shape(c, len(frames))
        inputs = np.zeros(shape, dtype)
        boxes = [prepare(f, c, inputs[i, 0]) for i, f in enumerate(frames)]
        t1 = time.perf_counter()
        outputs = session.run([c.output_name], {session.get_inputs()[0].name: inputs})[0]
        t2 = time.perf_counter()
        results = []
        for i, box in enumerate(boxes):
            labels = labels_from_output(outputs[i], c, np.zeros((spec.height, spec.width), np.uint8))
            results.append(finish(labels, box, c, self.spacing_mm))
        t3 = time.perf_counter()
        per = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        for r in results:
            r.timings = {k: v / len(frames) for k, v in per.items()}
            r.timings["total"] = sum(r.timings.values())
        return results

    def _batch_session(self) -> ort.InferenceSession:
        """A second session without CUDA graphs: a captured graph replays one fixed shape and fixed
        buffers, a batch call has neither."""
        if self._batch is None:
            plan = plan_providers(self.device, self._cache_dir, cuda_graph=False, exact=self._exact)
            self._batch = _session(self.path, plan.providers, self._threads)
        return self._batch

    def __repr__(self) -> str:
        spec, frame = self.contract.input, self.contract.frame
        where = "" if frame is None else f", frame={frame.height}x{frame.width} uint8 (in-graph preprocessing)"
        return (f"Segmenter({self.path.name!r}, provider={self.provider}, input={spec.height}x{spec.width}{where}, "
                f"recipe={self.contract.recipe.name!r}, classes={list(self.contract.classes)})")
