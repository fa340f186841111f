"""Segmenter: an exported usseg model, frame in, labels and geometry out.

    seg = Segmenter("model.onnx", device="auto")    # auto | cpu | cuda[:N] | tensorrt[:N]
    result = seg(frame)          # any grey / RGB(A) frame, uint8 / uint16 / float, any size
                                 # (models exported with --graph-preprocess: their one frame size)
    result.labels, result.masks, result.lines, result.box, result.timings
    seg.model_info()             # model SHA-256, contract, versions, provider, preprocessing path

Four stages, composed once; every frame takes this route (docs/ARCHITECTURE.md):

    preparer (prepare.py)  ->  engine (engine.py | Triton)  ->  decoder (decode.py)  ->  finisher (finish.py)
    frames -> model input      the graph runs                    output -> labels        labels -> Result

The contract is read from the model file first (``model_io.read_model``); every option is checked
against it before any session opens, and every stage is built from it, once. ``seg(frame)`` is
``seg.batch([frame])[0]``, and ``seg.stream`` calls ``seg(frame)``. The decoder hands out label maps
the caller owns and the finisher is a pure function, so the frames of one multi-frame call are
finished side by side on a thread pool (and a loop may finish one frame while the next one runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .contract import Contract
from .decode import Decoder, FlipTTA
from .engine import OrtEngine, session_plans
from .errors import UsageError
from .finish import Finisher
from .model_io import read_model
from .prepare import choose_kernels, make_preparer
from .provenance import package_version, usable_cores
from .providers import ModelError, ModelFacts, default_cache_dir, parse_device
from .result import Result

log = logging.getLogger("usseg.runtime")


class Stopwatch:
    """The one timing helper: milliseconds per stage of one call, shared out over its frames."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = (now - self._last) * 1e3
        self._last = now

    def stamp(self, results: list[Result]) -> list[Result]:
        share = {stage: ms / len(results) for stage, ms in self.ms.items()}
        for result in results:
            result.timings = {**share, "total": sum(share.values())}
        return results


class FramePipeline:
    """Frames in, Results out, through the four stages (see the module docstring); a subclass
    builds them and calls :meth:`_compose` (Segmenter here, TritonSegmenter on a server)."""

    def _compose(self, contract: Contract, preparer: Any, engine: Any, *, spacing_mm: float | None,
                 runner: Any = None, threads: int | None = None, warmup: bool = True) -> None:
        self.contract, self.preparer, self.engine = contract, preparer, engine
        self.runner = runner or engine  # what runs the graph: the engine, or flip TTA around it
        self.decoder, self.finisher = Decoder(contract), Finisher(contract, spacing_mm)
        self._single = engine.buffers(1)
        self._threads, self._post_pool, self._post_pool_lock = threads, None, threading.Lock()
        if warmup:
            self.finisher.warmup()

    @property
    def spacing_mm(self) -> float | None:
        return self.finisher.spacing_mm

    def __call__(self, frame: Any) -> Result:
        return self.batch([frame])[0]

    def batch(self, frames: Iterable[Any]) -> list[Result]:
        """Segment several frames: in one graph call where the model takes a dynamic batch (the
        multi-frame mode: one host-to-device copy of the whole batch), else one call per frame."""
        frames = list(frames)
        if len(frames) > 1 and self.engine.batches:
            return self._segment(frames, self.engine.buffers(len(frames)))
        return [self._segment([frame], self._single)[0] for frame in frames]

    def _segment(self, frames: list[Any], buffers: Any) -> list[Result]:
        clock = Stopwatch()
        model_input = self.preparer(frames, buffers)
        clock.lap("preprocess")
        output = self.runner.run(buffers, model_input)
        labels = self._each(self.decoder, list(output))
        clock.lap("inference")
        results = self._each(self.finisher, labels, model_input.letterboxes)
        clock.lap("postprocess")
        return clock.stamp(results)

    def _each(self, fn: Callable, *columns: list) -> list:
        """``fn`` over the frames of a call: inline for one, side by side for several (the
        post-processing and argmax kernels release the GIL and keep their scratch per thread)."""
        if len(columns[0]) == 1:
            return [fn(*(column[0] for column in columns))]
        return list(self._post_workers().map(fn, *columns))

    def _post_workers(self) -> ThreadPoolExecutor:
        """As many threads as ``threads`` (default: the cores this process may use, at most 8)."""
        with self._post_pool_lock:
            if self._post_pool is None:
                workers = self._threads or min(8, usable_cores())
                self._post_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="usseg-post")
            return self._post_pool

    def stream(self, source: Any, **kwargs: Any):
        """``for item in seg.stream(source): ...`` -- see usseg.runtime.stream.stream."""
        from .stream import stream

        return stream(self, source, **kwargs)

    def run_stream(self, source: Any, callback, **kwargs: Any):
        """Callback form of :meth:`stream`; returns the stream statistics."""
        from .stream import run_stream

        return run_stream(self, source, callback, **kwargs)

    def close(self) -> None:
        with self._post_pool_lock:
            if self._post_pool is not None:
                self._post_pool.shutdown(wait=True)
                self._post_pool = None
        self.engine.close()


class Segmenter(FramePipeline):
    """See the module docstring. ``preprocess``: auto | host | fused (prepare.py); ``flip_tta``:
    average the scores of each frame and its mirror image (logits or probs models); ``fp16``:
    TensorRT in fp16 even for an fp32 model (default: only fp16 models); ``threads``: ONNX
    Runtime's threads on the CPU, and the threads that finish the frames of one ``batch`` call
    (default: ONNX Runtime's own choice, and this process's cores up to 8)."""

    def __init__(self, model_path: str | Path, device: str = "auto", *, spacing_mm: float | None = None,
                 cache_dir: str | Path | None = None, threads: int | None = None, cuda_graph: bool = True,
                 warmup: bool = True, preprocess: str = "auto", flip_tta: bool = False,
                 fp16: bool | None = None) -> None:
        self.path, self.device, self.flip_tta = Path(model_path), device, bool(flip_tta)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        if spacing_mm is not None and not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
        request = parse_device(device)
        model = read_model(self.path)
        contract, self.sha256 = model.contract, model.sha256
        if self.flip_tta and contract.output == "labels":
            raise UsageError(f"{self.path.name}: flip_tta averages class scores, and this model outputs labels; "
                             f"export it with --output logits (or probs)")
        plans = session_plans(request, ModelFacts.from_contract(contract), cuda_graph=cuda_graph,
                              cache_dir=cache_dir or default_cache_dir(), fp16=fp16)
        kernels = choose_kernels(preprocess, contract, plans, self.path.name)
        engine = OrtEngine(self.path, plans, model.io, threads=threads, warmup=warmup)
        preparer = make_preparer(kernels, contract, engine)
        self._compose(contract, preparer, engine, spacing_mm=spacing_mm, threads=threads, warmup=warmup,
                      runner=FlipTTA(engine, preparer) if self.flip_tta else None)
        self.provider, self.preprocessing = engine.provider, preparer.name
        log.info("usseg runtime: %s on %s, preprocessing %s%s", self.path.name, engine.plan.describe(),
                 self.preprocessing, ", flip TTA" if self.flip_tta else "")

    @property
    def cuda_graph(self) -> bool:
        return self.engine.cuda_graph

    def model_info(self) -> dict[str, Any]:
        """What a result was made with: the model file, its contract, the software and the engine."""
        c = self.contract
        return {"model": str(self.path), "sha256": self.sha256, "classes": list(c.classes),
                "recipe": c.recipe.to_dict(), "output": c.output, "precision": c.provenance.get("precision"),
                "usseg": package_version("usseg"), "preprocessing": self.preprocessing, "flip_tta": self.flip_tta,
                **self.engine.info()}

    def __repr__(self) -> str:
        spec, frame = self.contract.input, self.contract.frame
        where = "" if frame is None else f", frame={frame.height}x{frame.width} uint8"
        tta = ", flip_tta=True" if self.flip_tta else ""
        return (f"Segmenter({self.path.name!r}, provider={self.provider}, input={spec.height}x{spec.width}{where}, "
                f"preprocessing={self.preprocessing}, recipe={self.contract.recipe.name!r}, "
                f"classes={list(self.contract.classes)}{tta})")
