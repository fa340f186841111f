"""The engine: one model's ONNX Runtime session on one device, bound, warmed up, and run per call.

``session_plans(request, contract)`` lists the ways to open the model on this ONNX Runtime build,
best first (the pure policy is :mod:`usseg.runtime.providers`). ``OrtEngine(path, plans, io)`` tries
them in order. For each it opens the session (:mod:`usseg.runtime.sessions`), checks that the
active providers and their options are the planned ones, binds preallocated buffers through IO
binding (:mod:`usseg.runtime.buffers`) and warms up -- with a CUDA graph, until the graph has been
captured and a replay has been checked against regular runs. Any provider failure on the way moves
on to the next plan and is reported; a bad model raises ModelError and an exhausted device
OutOfMemoryError, at once. Every ONNX Runtime failure goes through one translator (``_guarded``).

Per call the engine takes the bound buffers of ``n`` frames (:meth:`OrtEngine.buffers`: batch 1
with the CUDA graph, or a second session's for the multi-frame mode of a dynamic-batch model),
copies the host input to the device unless the preparer wrote it there, runs the binding and
returns the host output buffer (reused: read it before the next call). The device-to-host copy
goes into the host buffer without a new array per frame where this ONNX Runtime can
(``copy_tensors``), which warm-up checks against ``OrtValue.numpy()``.

Threads: ONNX Runtime keeps a CUDA graph per thread (cuda_execution_provider.h: the graph lives in
the PerThreadContext, captured on the third run of that thread). An engine with a CUDA graph owns
one worker thread and runs every session call -- warm-up, capture, frames, and whatever the caller
passes to :meth:`OrtEngine.call` (the fused preprocessing kernels) -- on it, whichever thread calls:
the stream's worker or the application's. Without a CUDA graph, calls run on the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .buffers import READBACKS, Bound, copy_numpy
from .errors import UssegError
from .model_io import ModelIO
from .providers import (
    CPU,
    CUDA,
    TRT,
    DeviceRequest,
    ModelError,
    ModelFacts,
    OutOfMemoryError,
    ProviderError,
    SessionPlan,
    candidate_plans,
    failure_kind,
    first_line,
    parse_device,
    preload_gpu_libraries,
    warn_conflicting_packages,
    without_graph,
)
from .sessions import PlanUnusable, available_providers, check_active, open_session, tensorrt_loadable

log = logging.getLogger("usseg.runtime")

# Runs before a CUDA graph is known to be captured and replayed: ORT's CUDA EP captures on the
# third run of a thread (min_num_runs_before_cuda_graph_capture_ = 2), TensorRT's after one;
# the last two runs are replays, compared with the first two.
CAPTURE_RUNS = 5


def session_plans(request: str | DeviceRequest, facts: ModelFacts, *, cuda_graph: bool = True,
                  cache_dir: str | Path = "", fp16: bool | None = None) -> list[SessionPlan]:
    """The plans to try for a model (``facts``: from its contract) on ``request`` with this ONNX
    Runtime build, best first; ``fp16``: TensorRT in fp16 even for an fp32 model. ProviderError
    when none can meet the request."""
    request = parse_device(request)
    if request.kind != "cpu":
        preload_gpu_libraries()
        warn_conflicting_packages(str(request))
    available = available_providers()
    trt_ok = tensorrt_loadable() if request.kind == "auto" and TRT in available else None
    plans = candidate_plans(request, available, facts, cuda_graph=cuda_graph, cache_dir=cache_dir, fp16=fp16,
                            tensorrt_loadable=trt_ok)
    for note in plans[0].notes:
        log.info("provider skipped: %s", note)
    return plans


class Worker:
    """One daemon thread that runs the calls given to it, in order (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="usseg-gpu", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, reply, done = job
            try:
                reply.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
                reply.append((False, exc))
            done.set()

    def call(self, fn: Callable, *args: Any) -> Any:
        if threading.get_ident() == self._thread.ident:
            return fn(*args)
        reply: list = []
        done = threading.Event()
        self._jobs.put((fn, args, reply, done))
        done.wait()
        ok, value = reply[0]
        if ok:
            return value
        raise value

    def stop(self) -> None:
        self._jobs.put(None)


class OrtEngine:
    """The session of one model on one device; see the module docstring."""

    def __init__(self, model: Path, plans: list[SessionPlan], io: ModelIO, *, threads: int | None = None,
                 warmup: bool = True) -> None:
        self.path, self.io, self._threads, self._warmup = Path(model), io, threads, warmup
        self.device = plans[0].device
        self.batches = io.input.shape[0] is None  # a dynamic batch: several frames in one call
        self._worker: Worker | None = None
        self._batch: tuple[Any, dict[int, Bound]] | None = None
        self.fallbacks: list[str] = []
        for plan in plans:
            try:
                self._start(plan)
                break
            except PlanUnusable as exc:
                self.fallbacks.append(f"{plan.describe()}: {exc}")
                log.info("%s: %s not used: %s", self.path.name, plan.describe(), exc)
                self._stop_worker()
        else:
            raise ProviderError(f"device {self.device!r}: no provider could run {self.path.name}: "
                                + "; ".join(self.fallbacks))
        if self.plan.expect == CPU and self.device == "auto" and any(p.on_gpu for p in plans):
            log.warning("%s runs on the CPU: %s", self.path.name, "; ".join(self.fallbacks))

    # -- set-up ----------------------------------------------------------------------------------
    def _start(self, plan: SessionPlan) -> None:
        if plan.cuda_graph:
            self._worker = Worker()
        self.plan = plan
        self._guarded(True, self.call, self._open, plan)

    def _guarded(self, opening: bool, fn: Callable, *args: Any) -> Any:
        """Run ``fn``; an ONNX Runtime failure becomes OutOfMemoryError, or while ``opening``
        ModelError or PlanUnusable (try the next plan), else ProviderError."""
        try:
            return fn(*args)
        except UssegError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; sorted by failure_kind
            if opening and isinstance(exc, PlanUnusable):
                raise
            kind, where, text = failure_kind(exc), self.plan.describe(), first_line(exc)
            if kind == "oom":
                raise OutOfMemoryError(f"{self.path}: out of memory on {where} ({text})") from None
            if not opening:
                raise ProviderError(f"{self.path}: inference failed on {where} ({text})") from None
            if kind == "model" or not self.plan.on_gpu:
                raise ModelError(f"{self.path}: ONNX Runtime cannot load this model ({text})") from None
            raise PlanUnusable(text) from None

    def _open(self, plan: SessionPlan) -> None:
        self.session = open_session(self.path, plan, self._threads)
        check_active(self.session, plan)
        self.provider = self.session.get_providers()[0]
        self.on_gpu = plan.on_gpu
        self._bound = Bound(self.session, self.io, 1, self.on_gpu, plan.device_id)
        self.readback = "none"
        self._readback = copy_numpy
        self.capture_verified: bool | None = None
        if self.on_gpu:
            self._choose_readback()
        if plan.cuda_graph:
            self._capture()
        elif self._warmup:
            for _ in range(2 if self.on_gpu else 1):
                self._execute(self.session, self._bound, True)

    def _choose_readback(self) -> None:
        """The first device-to-host copy into the host buffer that this ORT has and that gives
        what ``OrtValue.numpy()`` gives (one regular run fills the output first)."""
        bound = self._bound
        bound.host_in[...] = _pattern(bound.host_in)
        bound.dev_in.update_inplace(bound.host_in)
        self.session.run_with_iobinding(bound.binding)
        reference = bound.dev_out.numpy().reshape(bound.host_out.shape)
        for name, copy in READBACKS.items():
            try:
                np.copyto(bound.host_out, reference + 1, casting="unsafe")  # anything but the answer
                copy(bound.dev_out, bound.host_out)
            except Exception as exc:  # noqa: BLE001 - this ORT lacks that copy: try the next
                log.debug("readback %s: %s", name, first_line(exc))
                continue
            if np.array_equal(bound.host_out, reference):
                self.readback, self._readback = name, copy
                return
        raise PlanUnusable("no device-to-host copy of the output gave what OrtValue.numpy() gives")

    def _capture(self) -> None:
        """Regular runs, the capture, then replays on two inputs, compared with the regular runs."""
        bound = self._bound
        patterns = (np.zeros_like(bound.host_in), _pattern(bound.host_in))
        outputs = []
        for i in range(CAPTURE_RUNS):
            bound.host_in[...] = patterns[i % 2]
            outputs.append(self._execute(self.session, bound, True).copy())
        same = all(_close(outputs[i], outputs[i - 2]) for i in range(2, CAPTURE_RUNS))
        if not same:
            raise PlanUnusable("the replayed CUDA graph gave other outputs than the regular runs")
        self.capture_verified = True
        bound.host_in[...] = 0

    # -- per call -----------------------------------------------------------------------------------
    def call(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` where the session's calls run (the worker thread with a CUDA graph)."""
        return self._worker.call(fn, *args) if self._worker is not None else fn(*args)

    @property
    def cuda_graph(self) -> bool:
        return self.plan.cuda_graph is not None

    def buffers(self, n: int) -> Bound:
        """The bound buffers for ``n`` frames: batch 1 on the session with the CUDA graph; for
        several frames (dynamic batch) a second session without CUDA graphs (a captured graph
        replays one shape), opened on first use, with buffers made once per size; TensorRT's place
        is taken by CUDA there, which needs no engine per batch size."""
        if n == 1:
            return self._bound
        if self._batch is None:
            plan = without_graph(self.plan)
            if TRT in plan.names and CUDA in plan.names:
                plan = replace(plan, providers=tuple(p for p in plan.providers if p[0] != TRT), expect=CUDA)
            session = self._guarded(False, self.call, open_session, self.path, plan, self._threads)
            self._guarded(False, check_active, session, plan)
            self._batch = (session, {})
        session, bound = self._batch
        if n not in bound:
            if len(bound) >= 2:
                bound.pop(next(iter(bound)))
            bound[n] = self._guarded(False, self.call, Bound, session, self.io, n, self.on_gpu, self.plan.device_id)
        return bound[n]

    def run(self, buffers: Bound, model_input: Any) -> np.ndarray:
        """Run the graph on ``buffers`` (filled by the preparer: ``model_input.on_device`` when it
        wrote the device input itself); returns the host output buffer [n, ...] (reused)."""
        session = self.session if buffers is self._bound else self._batch[0]
        return self._guarded(False, self.call, self._execute, session, buffers, not model_input.on_device)

    def _execute(self, session: Any, bound: Bound, copy_input: bool) -> np.ndarray:
        if bound.gpu and copy_input:
            bound.dev_in.update_inplace(bound.host_in)
        session.run_with_iobinding(bound.binding)
        if bound.gpu:
            self._readback(bound.dev_out, bound.host_out)
        return bound.host_out

    # -- report and close ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"onnxruntime": ort.__version__, "device": self.device, "provider": self.provider,
                "providers": self.session.get_providers(), "device_id": self.plan.device_id if self.on_gpu else None,
                "cuda_graph": self.cuda_graph, "capture_verified": self.capture_verified,
                "pinned_host_buffers": self._bound.pinned, "readback": self.readback,
                "fallbacks": list(self.fallbacks), "notes": list(self.plan.notes)}

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        self._stop_worker()

    def __del__(self) -> None:
        try:
            self._stop_worker()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _pattern(like: np.ndarray) -> np.ndarray:
    """A deterministic non-constant input of the buffer's shape and dtype (a ramp and stripes)."""
    h, w = like.shape[-2:]
    ramp = (np.add.outer(np.arange(h) * 3, np.arange(w) * 5) % 256).astype(np.float64)
    ramp[:, ::7] = 255.0
    values = ramp if like.dtype == np.uint8 else ramp / 255.0
    return np.broadcast_to(values, like.shape).astype(like.dtype)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "iub":
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(b).max(initial=0.0)))))
