"""The engine under the Segmenter: one ONNX Runtime session, opened as planned, checked, bound, warmed up.

``Backend(path, device, describe=...)`` tries the plans of :func:`usseg.runtime.providers.candidate_plans`
in order. For each it opens the session (the one session factory, :func:`open_session`, with ORT's
own silent provider fallback switched off), checks that the active providers and their options are
the planned ones (a silent rebuild without our options is caught here), binds preallocated buffers
through IO binding and warms up -- with a CUDA graph, until the graph has been captured and a replay
has been checked against regular runs. Any provider failure on the way moves on to the next plan and
is reported; a bad model raises ModelError and an exhausted device OutOfMemoryError, at once.

Buffers (buffers.py): the host side of the input and output is page-locked (``cudaHostRegister``) where CUDA's
runtime library can be loaded, so the copies are direct DMA; the device side is one OrtValue each,
bound once, whose addresses a captured graph keeps. The device-to-host copy goes into the host
buffer without a new array per frame where this ONNX Runtime can (``copy_tensors``), which warm-up
checks against ``OrtValue.numpy()``.

Threads: ONNX Runtime keeps a CUDA graph per thread (cuda_execution_provider.h: the graph lives in
the PerThreadContext, captured on the third run of that thread). A backend with a CUDA graph owns
one worker thread and runs every session call -- warm-up, capture, frames, and whatever the caller
passes to :meth:`Backend.call` (fused preprocessing kernels) -- on it, whichever thread calls: the
stream's worker or the application's. Without a CUDA graph, calls run on the caller's thread.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .buffers import READBACKS, Bound, IOSpec, Worker, copy_numpy
from .providers import (
    CPU,
    CUDA,
    TRT,
    ModelError,
    ModelFacts,
    OutOfMemoryError,
    ProviderError,
    SessionPlan,
    candidate_plans,
    failure_kind,
    first_line,
    parse_device,
    warn_conflicting_packages,
    without_graph,
)

log = logging.getLogger("usseg.runtime")

# Runs before a CUDA graph is known to be captured and replayed: ORT's CUDA EP captures on the
# third run of a thread (min_num_runs_before_cuda_graph_capture_ = 2), TensorRT's after one;
# the last two runs are replays, compared with the first two.
CAPTURE_RUNS = 5


class _Unusable(Exception):
    """This plan cannot be used; the message says why (the next plan is tried)."""


# -- the session factory ------------------------------------------------------------------------------
def available_providers() -> list[str]:
    return ort.get_available_providers()


def tensorrt_loadable() -> bool:
    """Whether TensorRT's library can be loaded (ORT lists its provider whenever it was built with it)."""
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "nvinfer_10.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


def open_session(model: Path | bytes, plan: SessionPlan, threads: int | None = None,
                 optimize: bool = True) -> ort.InferenceSession:
    """The one place sessions are made: the plan's providers, options and session config; ORT's
    own fallback (a rebuild with default providers and none of our options) switched off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    for key, value in plan.session_config:
        options.add_session_config_entry(key, value)
    for name, opts in plan.providers:
        if name == TRT and opts.get("trt_engine_cache_path"):
            Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=[(n, dict(o)) for n, o in plan.providers],
                                enable_fallback=0)


CPU_PLAN = SessionPlan(device="cpu", providers=((CPU, {}),))


def cpu_session(model: Path | bytes, optimize: bool = True) -> ort.InferenceSession:
    """A plain CPU session (export verification, contract peeks): the same factory as the engine."""
    return open_session(model, CPU_PLAN, optimize=optimize)


# Options whose silent loss changes what runs; ORT reports them back as "0"/"1" or numbers.
CHECKED_OPTIONS = ("device_id", "enable_cuda_graph", "use_tf32", "trt_cuda_graph_enable", "trt_fp16_enable")


def _flag(value: Any) -> str:
    text = str(value).strip().lower()
    return {"true": "1", "false": "0"}.get(text, text)


def check_active(session: Any, plan: SessionPlan) -> None:
    """Raise _Unusable unless the session runs the planned provider first, with the planned options."""
    active = session.get_providers()
    if not active or active[0] != plan.expect:
        raise _Unusable(f"{plan.expect} was planned, but the session runs on {active}")
    got = session.get_provider_options()
    for name, planned in plan.providers:
        if name == CPU or name not in active:
            continue
        actual = got.get(name, {})
        lost = {k: (v, actual[k]) for k, v in planned.items()
                if k in CHECKED_OPTIONS and k in actual and _flag(actual[k]) != _flag(v)}
        if lost:
            changes = ", ".join(f"{k} {a!r} instead of {v!r}" for k, (v, a) in sorted(lost.items()))
            raise _Unusable(f"{name} started with other options than planned ({changes}): "
                            f"the session was rebuilt without them")



# -- the backend ------------------------------------------------------------------------------------
class Backend:
    """The session of one model on one device; see the module docstring."""

    def __init__(self, model: Path, device: str = "auto", *, describe: Callable[[Any], IOSpec],
                 facts: ModelFacts | None = None, threads: int | None = None, cuda_graph: bool = True,
                 cache_dir: str | Path = "", fp16: bool | None = None, warmup: bool = True) -> None:
        self.path, self.request, self._threads = Path(model), parse_device(device), threads
        self._describe, self._warmup = describe, warmup
        self._worker: Worker | None = None
        self._batch: tuple[Any, dict[int, Bound]] | None = None
        self.fallbacks: list[str] = []
        if self.request.kind != "cpu":
            warn_conflicting_packages(str(self.request))
        available = available_providers()
        trt_ok = tensorrt_loadable() if self.request.kind == "auto" and TRT in available else None
        plans = candidate_plans(self.request, available, facts or ModelFacts(), cuda_graph=cuda_graph,
                                cache_dir=cache_dir, fp16=fp16, tensorrt_loadable=trt_ok)
        for note in plans[0].notes:
            log.info("provider skipped: %s", note)
        for plan in plans:
            try:
                self._start(plan)
                break
            except _Unusable as exc:
                self.fallbacks.append(f"{plan.describe()}: {exc}")
                log.info("%s: %s not used: %s", self.path.name, plan.describe(), exc)
                self._stop_worker()
        else:
            raise ProviderError(f"device {str(self.request)!r}: no provider could run {self.path.name}: "
                                + "; ".join(self.fallbacks))
        self._describe = None  # the caller's callback is needed no more (and would keep it alive)
        if self.plan.expect == CPU and self.request.kind == "auto" and any(p.on_gpu for p in plans):
            log.warning("%s runs on the CPU: %s", self.path.name, "; ".join(self.fallbacks))

    # -- set-up ----------------------------------------------------------------------------------
    def _start(self, plan: SessionPlan) -> None:
        if plan.cuda_graph:
            self._worker = Worker()
        self.plan = plan
        self._guard(self.call, self._open, plan)

    def _guard(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn``; ORT failures become ModelError, OutOfMemoryError or _Unusable."""
        try:
            return fn(*args)
        except (_Unusable, ModelError, ProviderError, OutOfMemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; sorted by failure_kind
            kind = failure_kind(exc)
            if kind == "oom":
                raise OutOfMemoryError(f"{self.path}: out of memory on {self.plan.describe()} "
                                       f"({first_line(exc)})") from None
            if kind == "model" or not self.plan.on_gpu:
                raise ModelError(f"{self.path}: ONNX Runtime cannot load this model ({first_line(exc)})") from None
            raise _Unusable(first_line(exc)) from None

    def _open(self, plan: SessionPlan) -> None:
        self.session = open_session(self.path, plan, self._threads)
        check_active(self.session, plan)
        self.spec = self._describe(self.session)
        self.provider = self.session.get_providers()[0]
        self.on_gpu = plan.on_gpu
        self._bound = Bound(self.session, self.spec, 1, self.on_gpu, plan.device_id)
        self.readback = "none"
        self._readback = copy_numpy
        self.capture_verified: bool | None = None
        if self.on_gpu:
            self._choose_readback()
        if plan.cuda_graph:
            self._capture()
        elif self._warmup:
            for _ in range(2 if self.on_gpu else 1):
                self._bound.run(self.session, True, self._readback)

    def _choose_readback(self) -> None:
        """The first device-to-host copy into the host buffer that this ORT has and that gives
        what ``OrtValue.numpy()`` gives (one regular run fills the output first)."""
        bound = self._bound
        bound.host_in[...] = _pattern(bound.host_in)
        bound.run(self.session, True, lambda dev, host: None)
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
        raise _Unusable("no device-to-host copy of the output gave what OrtValue.numpy() gives")

    def _capture(self) -> None:
        """Regular runs, the capture, then replays on two inputs, compared with the regular runs."""
        bound = self._bound
        patterns = (np.zeros_like(bound.host_in), _pattern(bound.host_in))
        outputs = []
        for i in range(CAPTURE_RUNS):
            bound.host_in[...] = patterns[i % 2]
            outputs.append(bound.run(self.session, True, self._readback).copy())
        same = all(_close(outputs[i], outputs[i - 2]) for i in range(2, CAPTURE_RUNS))
        if not same:
            raise _Unusable("the replayed CUDA graph gave other outputs than the regular runs")
        self.capture_verified = True
        bound.host_in[...] = 0

    # -- per frame ----------------------------------------------------------------------------------
    def call(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` where the session's calls run (the worker thread with a CUDA graph)."""
        return self._worker.call(fn, *args) if self._worker is not None else fn(*args)

    @property
    def cuda_graph(self) -> bool:
        return self.plan.cuda_graph is not None

    @property
    def input(self) -> np.ndarray:
        """The host input buffer (batch 1) that :meth:`run` sends."""
        return self._bound.host_in

    @property
    def output(self) -> np.ndarray:
        return self._bound.host_out

    @property
    def input_device_ptr(self) -> int | None:
        """Address of the bound device input (GPU only): fused kernels write the model input there."""
        return self._bound.dev_in.data_ptr() if self.on_gpu else None

    def run(self, copy_input: bool = True) -> np.ndarray:
        """Run on the input buffer; returns the host output buffer (reused)."""
        return self._checked(self.call, self._bound.run, self.session, copy_input, self._readback)

    def _checked(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; sorted by failure_kind
            if failure_kind(exc) == "oom":
                raise OutOfMemoryError(f"{self.path}: out of memory on {self.plan.describe()} "
                                       f"({first_line(exc)})") from None
            raise ProviderError(f"{self.path}: inference failed on {self.plan.describe()} "
                                f"({first_line(exc)})") from None

    # -- several frames in one call ---------------------------------------------------------------
    def batch_buffers(self, n: int) -> Bound:
        """Buffers for ``n`` frames on a second session without CUDA graphs (a captured graph replays
        one shape), made once per size; TensorRT's place is taken by CUDA there, which needs no
        engine per batch size."""
        if self._batch is None:
            plan = without_graph(self.plan)
            if TRT in plan.names and CUDA in plan.names:
                plan = SessionPlan(plan.device, tuple(p for p in plan.providers if p[0] != TRT), None, plan.cpu_nodes,
                            CUDA, plan.session_config, plan.notes)
            session = self._checked(self.call, open_session, self.path, plan, self._threads)
            self._checked(check_active, session, plan)
            self._batch = (session, {})
        session, bound = self._batch
        if n not in bound:
            if len(bound) >= 2:
                bound.pop(next(iter(bound)))
            bound[n] = self._checked(self.call, Bound, session, self.spec, n, self.on_gpu, self.plan.device_id)
        return bound[n]

    def run_batch(self, buffers: Bound, copy_input: bool = True) -> np.ndarray:
        session = self._batch[0]
        return self._checked(self.call, buffers.run, session, copy_input, self._readback)

    # -- report and close ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"device": str(self.request), "provider": self.provider, "providers": self.session.get_providers(),
                "device_id": self.plan.device_id if self.on_gpu else None, "cuda_graph": self.cuda_graph,
                "capture_verified": self.capture_verified, "pinned_host_buffers": self._bound.pinned,
                "readback": self.readback, "fallbacks": list(self.fallbacks), "notes": list(self.plan.notes)}

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
