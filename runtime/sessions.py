"""The one place ONNX Runtime sessions are made and checked: the engine's, export verification's
and the GPU checks'.

A session is opened as a :class:`~usseg.runtime.providers.SessionPlan` says (providers, options,
session config) with ORT's own silent provider fallback switched off, and afterwards the active
providers and their options are compared with the plan: a silent rebuild without our options is
caught here (:func:`check_active`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .providers import CPU, TRT, SessionPlan


class PlanUnusable(Exception):
    """This plan cannot be used; the message says why (the engine tries the next one)."""


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
    """The plan's providers, options and session config; ORT's own fallback (a rebuild with
    default providers and none of our options) switched off."""
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
    """A plain CPU session (export verification): the same factory as the engine's."""
    return open_session(model, CPU_PLAN, optimize=optimize)


# Options whose silent loss changes what runs; ORT reports them back as "0"/"1" or numbers.
CHECKED_OPTIONS = ("device_id", "enable_cuda_graph", "use_tf32", "trt_cuda_graph_enable", "trt_fp16_enable")


def _flag(value: Any) -> str:
    text = str(value).strip().lower()
    return {"true": "1", "false": "0"}.get(text, text)


def check_active(session: Any, plan: SessionPlan) -> None:
    """Raise PlanUnusable unless the session runs the planned provider first, with the planned options."""
    active = session.get_providers()
    if not active or active[0] != plan.expect:
        raise PlanUnusable(f"{plan.expect} was planned, but the session runs on {active}")
    got = session.get_provider_options()
    for name, planned in plan.providers:
        if name == CPU or name not in active:
            continue
        actual = got.get(name, {})
        lost = {k: (v, actual[k]) for k, v in planned.items()
                if k in CHECKED_OPTIONS and k in actual and _flag(actual[k]) != _flag(v)}
        if lost:
            changes = ", ".join(f"{k} {a!r} instead of {v!r}" for k, (v, a) in sorted(lost.items()))
            raise PlanUnusable(f"{name} started with other options than planned ({changes}): "
                               f"the session was rebuilt without them")
