"""Segmenter: an exported usseg model on ONNX Runtime, frame in, labels and geometry out.

    seg = Segmenter("model.onnx", device="auto")    # auto | cpu | cuda[:N] | tensorrt[:N]
    result = seg(frame)          # any grey / RGB(A) frame, uint8 / uint16 / float, any size
                                 # (models exported with --graph-preprocess: their one frame size)
    result.labels, result.masks, result.lines, result.box, result.timings
    seg.model_info()             # model SHA-256, contract, versions, provider, preprocessing path

The frame pipeline is prepare -> backend -> finish. The engine (providers, session, IO binding,
buffers, CUDA-graph capture, the thread session calls run on) is :mod:`usseg.runtime.backend`.
Preprocessing takes one of three paths, named in ``seg.preprocessing``, the repr and the log:

- ``host``: the recipe on the CPU, written into the (page-locked) host input buffer;
- ``in-graph``: the model was exported with its recipe inside (``--graph-preprocess``) and takes
  the raw grey frame;
- ``fused-cuda``: on a CUDA device, the recipe's fused kernels (``usseg.runtime.cuda``) write the
  model input straight into the bound device buffer; ``preprocess="auto"`` picks it where the
  kernels support the model's recipe.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .backend import Backend, IOSpec, available_providers, open_session
from .contract import METADATA_KEY, Contract, ContractError
from .errors import UsageError
from .labels import argmax_labels
from .model_io import GraphMismatchError, check_graph_io
from .pipeline import FramePipeline, finish, labels_from_output, model_input_shape, prepare
from .preprocess import Letterbox, to_grey8
from .provenance import package_version, usable_cores
from .providers import (
    CPU,
    CUDA,
    TRT,
    ModelError,
    ModelFacts,
    OutOfMemoryError,
    ProviderError,
    SessionPlan,
    default_cache_dir,
    parse_device,
    preload_gpu_libraries,
)
from .result import Result

log = logging.getLogger("usseg.runtime")

PREPROCESS = ("auto", "host", "fused")
__all__ = ["FramePipeline", "ModelError", "OutOfMemoryError", "ProviderError", "Segmenter", "finish",
           "labels_from_output", "model_input_shape", "peek_contract", "prepare", "read_contract"]


def read_contract(session: Any, path: Path) -> Contract:
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
    try:
        session = open_session(path, SessionPlan("cpu", ((CPU, {}),)), optimize=False)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a corrupt file
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load this model ({text})") from None
    return read_contract(session, path)


def io_spec(contract: Contract, session: Any) -> IOSpec:
    """What the backend binds for ``contract``'s model: its input, and its one output at batch 1."""
    in_shape, in_dtype = model_input_shape(contract)
    out_type = session.get_outputs()[0].type
    out_dtype = np.uint8 if "uint8" in out_type else np.int64 if "int64" in out_type else np.float32
    h, w = contract.input.height, contract.input.width
    out_shape = (1, h, w) if contract.output == "labels" else (1, contract.num_classes, h, w)
    name = contract.frame.name if contract.frame is not None else contract.input.name
    return IOSpec(name, in_shape, in_dtype, contract.output_name, out_shape, out_dtype)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Segmenter(FramePipeline):
    """See the module docstring. ``preprocess``: auto | host | fused; ``flip_tta``: average the
    scores of each frame and its mirror image (logits or probs models); ``fp16``: TensorRT in
    fp16 even for an fp32 model (default: only fp16 models); ``threads``: ONNX Runtime's threads
    on the CPU, and the threads that post-process the frames of one ``batch`` call (default:
    ONNX Runtime's own choice, and this process's cores up to 8)."""

    def __init__(self, model_path: str | Path, device: str = "auto", *, spacing_mm: float | None = None,
                 cache_dir: str | Path | None = None, threads: int | None = None, cuda_graph: bool = True,
                 warmup: bool = True, preprocess: str = "auto", flip_tta: bool = False,
                 fp16: bool | None = None) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        if spacing_mm is not None and not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
        if preprocess not in PREPROCESS:
            raise UsageError(f"preprocess {preprocess!r}; valid: {list(PREPROCESS)}")
        self.spacing_mm, self.device, self.flip_tta = spacing_mm, device, bool(flip_tta)
        request = parse_device(device)
        self.sha256 = file_sha256(self.path)
        facts = None
        if request.kind != "cpu":
            preload_gpu_libraries()
            # The plan depends on the model (precision, in-graph preprocessing): read its contract
            # first, where a GPU provider could be chosen.
            if any(p in available_providers() for p in (CUDA, TRT)):
                facts = ModelFacts.from_contract(peek_contract(self.path))
        self._backend = Backend(self.path, request, describe=self._describe, facts=facts, threads=threads,
                                cuda_graph=cuda_graph, cache_dir=cache_dir or default_cache_dir(), fp16=fp16,
                                warmup=warmup)
        self.provider = self._backend.provider
        spec = self.contract.input
        self._labels = np.zeros((spec.height, spec.width), np.uint8)
        if self.flip_tta and self.contract.output == "labels":
            raise UsageError(f"{self.path.name}: flip_tta averages class scores, and this model outputs labels; "
                             f"export it with --output logits (or probs)")
        self._fused: dict[tuple[int, int], Any] = {}
        self._views: dict[int, Any] = {}
        self._copy_input = True
        self._threads = threads
        self._post_pool: ThreadPoolExecutor | None = None
        self._post_pool_lock = threading.Lock()
        self.preprocessing = self._choose_preprocessing(preprocess)
        log.info("usseg runtime: %s on %s, preprocessing %s%s", self.path.name, self._backend.plan.describe(),
                 self.preprocessing, ", flip TTA" if self.flip_tta else "")
        if warmup and self.contract.postprocess.kind == "spine":
            from .postprocess import warmup as warm_post

            warm_post()

    def _describe(self, session: Any) -> IOSpec:
        self.contract = read_contract(session, self.path)
        try:
            check_graph_io(session.get_inputs(), session.get_outputs(), self.contract, self.path)
        except GraphMismatchError as exc:
            raise ModelError(str(exc)) from None
        return io_spec(self.contract, session)

    # -- preprocessing path --------------------------------------------------------------------------
    def _choose_preprocessing(self, wanted: str) -> str:
        if self.contract.frame is not None:
            if wanted != "auto":
                raise UsageError(f"preprocess={wanted!r}: {self.path.name} preprocesses in its graph "
                                 f"(exported with --graph-preprocess); use preprocess='auto'")
            return "in-graph"
        fused, why = self._fused_class()
        if wanted == "fused" and fused is None:
            raise ProviderError(f"preprocess='fused': {why}")
        if wanted != "host" and fused is not None:
            self._fused_recipe = fused
            return "fused-cuda"
        if wanted == "auto" and self._backend.on_gpu:
            log.info("fused preprocessing not used: %s", why)
        return "host"

    def _fused_class(self) -> tuple[Any, str]:
        """FusedRecipe if the fused kernels can prepare this model's input here, else why not."""
        if not self._backend.on_gpu:
            return None, f"the model runs on {self.provider}, not on a CUDA device"
        if self._backend.plan.device_id != 0:
            return None, "the fused kernels run on GPU 0 (Numba's default device) only"
        try:
            fused = importlib.import_module(".cuda", __package__)
        except Exception as exc:  # noqa: BLE001 - whatever breaks the import, the host path remains
            return None, f"usseg.runtime.cuda cannot be imported ({type(exc).__name__}: {exc})"
        missing = fused.unavailable_reason() if hasattr(fused, "unavailable_reason") else None
        if missing:
            return None, missing
        reason = fused.FusedRecipe.supports(self.contract.recipe)
        if reason:
            return None, f"the fused kernels do not support recipe {self.contract.recipe.name!r} ({reason})"
        self._wrap = getattr(fused, "device_array_from_pointer", DeviceArray)
        return fused.FusedRecipe, ""

    def _prepare_frame(self, frame: Any) -> Letterbox:
        self._copy_input = True
        if self.preprocessing != "fused-cuda":
            return prepare(frame, self.contract, self._input[0, 0])
        box = self._prepare_fused(frame, self._backend.input_device_ptr)
        if box is None:  # a frame size the kernels do not take: this frame on the host path
            return prepare(frame, self.contract, self._input[0, 0])
        self._copy_input = False
        return box

    def _prepare_fused(self, frame: Any, address: int) -> Letterbox | None:
        """The fused kernels write the model input for ``frame`` at device ``address``; None where
        they cannot take this frame size (said once per size)."""
        grey = to_grey8(frame)
        spec = self.contract.input
        key = grey.shape
        if key not in self._fused:
            if len(self._fused) >= 4:
                self._fused.pop(next(iter(self._fused)))
            reason = self._fused_recipe.supports(self.contract.recipe, key, (spec.height, spec.width))
            self._fused[key] = None if reason else self._backend.call(
                self._fused_recipe, self.contract.recipe, key, (spec.height, spec.width))
            if reason:
                log.info("frames of %dx%d go the host path: %s", key[0], key[1], reason)
        kernels = self._fused[key]
        if kernels is None:
            return None
        out = self._views.get(address)
        if out is None:  # one view per bound buffer address, made once
            if len(self._views) > 64:
                self._views.clear()
            out = self._views[address] = self._wrap(address, (spec.height, spec.width), np.float32)
        self._backend.call(kernels.run, grey, out)
        return Letterbox.fit(key[0], key[1], spec.height, spec.width)

    # -- inference ----------------------------------------------------------------------------------
    @property
    def session(self) -> ort.InferenceSession:
        return self._backend.session

    @property
    def _input(self) -> np.ndarray:
        return self._backend.input

    @property
    def on_gpu(self) -> bool:
        return self._backend.on_gpu

    @property
    def cuda_graph(self) -> bool:
        return self._backend.cuda_graph

    def _run(self) -> np.ndarray:
        return self._backend.run(copy_input=self._copy_input)[0]

    def _infer(self) -> np.ndarray:
        """Run on the prepared input; returns the [H, W] label map at model size (a reused buffer)."""
        return labels_from_output(self._run(), self.contract, self._labels)

    def __call__(self, frame: Any) -> Result:
        if not self.flip_tta:
            return super().__call__(frame)
        t0 = time.perf_counter()
        grey = to_grey8(frame)
        box = self._prepare_frame(grey)
        t1 = time.perf_counter()
        scores = self._run().astype(np.float32, copy=True)
        t2 = time.perf_counter()
        self._prepare_frame(np.ascontiguousarray(grey[:, ::-1]))
        t3 = time.perf_counter()
        mirrored = self._run()
        # The mirror's content sits in the same letterbox columns, reversed: reverse it back there.
        cols = slice(box.left, box.left + box.new_w)
        scores[..., cols] = 0.5 * (scores[..., cols] + mirrored[..., cols][..., ::-1])
        labels = argmax_labels(scores, self._labels)
        t4 = time.perf_counter()
        result = finish(labels, box, self.contract, self.spacing_mm)
        t5 = time.perf_counter()
        result.timings = {"preprocess": (t1 - t0 + t3 - t2) * 1e3, "inference": (t2 - t1 + t4 - t3) * 1e3,
                          "postprocess": (t5 - t4) * 1e3, "total": (t5 - t0) * 1e3}
        return result

    def batch(self, frames: Iterable[Any]) -> list[Result]:
        """Segment several frames; one graph call per frame (fixed batch) or one for all (dynamic:
        the multi-frame mode, one host-to-device copy of the whole batch)."""
        frames = list(frames)
        if self.contract.input.batch is not None or len(frames) < 2 or self.flip_tta:
            return [self(f) for f in frames]
        c, spec = self.contract, self.contract.input
        t0 = time.perf_counter()
        buffers = self._backend.batch_buffers(len(frames))
        fused = self.preprocessing == "fused-cuda"
        if fused:
            step, base = spec.height * spec.width * 4, buffers.dev_in.data_ptr()
            boxes = [self._prepare_fused(f, base + i * step) for i, f in enumerate(frames)]
            fused = all(box is not None for box in boxes)
        if not fused:
            boxes = [prepare(f, c, buffers.host_in[i, 0]) for i, f in enumerate(frames)]
        t1 = time.perf_counter()
        outputs = self._backend.run_batch(buffers, copy_input=not fused)
        t2 = time.perf_counter()

        def post(i: int) -> Result:
            labels = labels_from_output(outputs[i], c, np.zeros((spec.height, spec.width), np.uint8))
            return finish(labels, boxes[i], c, self.spacing_mm)

        results = list(self._post_workers().map(post, range(len(frames))))
        t3 = time.perf_counter()
        per = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        for r in results:
            r.timings = {k: v / len(frames) for k, v in per.items()}
            r.timings["total"] = sum(r.timings.values())
        return results

    # -- provenance ---------------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        """What a result was made with: the model file, its contract, the software and the engine."""
        c = self.contract
        return {"model": str(self.path), "sha256": self.sha256, "classes": list(c.classes),
                "recipe": c.recipe.to_dict(), "output": c.output, "precision": c.provenance.get("precision"),
                "usseg": package_version("usseg"), "onnxruntime": ort.__version__, "preprocessing": self.preprocessing,
                "flip_tta": self.flip_tta, **self._backend.info()}

    @property
    def provenance(self) -> dict[str, Any]:
        return self.model_info()

    def _post_workers(self) -> ThreadPoolExecutor:
        """Threads that finish the frames of one multi-frame call side by side: the post-processing
        kernels release the GIL and keep their scratch per thread, and on a GPU this host work is
        most of a batched frame's time. As many as ``threads`` (default: the cores this process may
        use, at most 8)."""
        with self._post_pool_lock:
            if self._post_pool is None:
                workers = self._threads or min(8, usable_cores())
                self._post_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="usseg-post")
            return self._post_pool

    def close(self) -> None:
        with self._post_pool_lock:
            if self._post_pool is not None:
                self._post_pool.shutdown(wait=True)
                self._post_pool = None
        self._backend.close()

    def __repr__(self) -> str:
        spec, frame = self.contract.input, self.contract.frame
        where = "" if frame is None else f", frame={frame.height}x{frame.width} uint8"
        tta = ", flip_tta=True" if self.flip_tta else ""
        return (f"Segmenter({self.path.name!r}, provider={self.provider}, input={spec.height}x{spec.width}{where}, "
                f"preprocessing={self.preprocessing}, recipe={self.contract.recipe.name!r}, "
                f"classes={list(self.contract.classes)}{tta})")


class DeviceArray:
    """A device buffer owned elsewhere (the bound model input), described by the CUDA array
    interface so that Numba kernels write into it."""

    def __init__(self, address: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.address, self.shape, self.dtype = int(address), tuple(shape), np.dtype(dtype)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"data": (self.address, False), "shape": self.shape, "typestr": self.dtype.str,
                "strides": None, "version": 3}
