"""Which ONNX Runtime execution providers to ask for, with which options: a pure policy.

``candidate_plans(request, available, facts)`` turns a device request (``auto``, ``cpu``,
``cuda[:N]``, ``tensorrt[:N]``), the providers this ONNX Runtime build lists and what is known of
the model (precision, in-graph preprocessing) into an ordered list of :class:`SessionPlan` s. The
engine (:mod:`usseg.runtime.engine`) opens the first plan that works and falls back to the next
one, saying why; nothing here touches a GPU or imports ONNX Runtime, so every rule is tested on
the CPU (tests/test_providers.py). The device syntax every command and the training configuration
accept is defined here too (``parse_device``, ``DEVICE_KINDS``, ``DEVICE_HELP``).

The rules follow ONNX Runtime's own source:
- CUDA graphs of the CUDA provider only when CUDA is the one GPU provider: a session with
  ``enable_cuda_graph`` fails when nodes are assigned to another provider such as TensorRT
  (inference_session.cc, ``AreAllComputeNodesAssignedToCudaEp``). When TensorRT runs the graph,
  its own ``trt_cuda_graph_enable`` is used instead, and a plan without it follows.
- ``session.disable_cpu_ep_fallback`` only when the CPU provider is not listed: ORT refuses the
  two together ("Conflicting session configuration", inference_session.cc).
- TensorRT's fp16 only for fp16 models or when asked: it is a precision change, not a speed-up.
- Models with in-graph preprocessing need exact float32 sums of integers: CUDA without TF32 and
  with cuDNN's heuristic algorithm choice, never TensorRT (docs/gpu.md).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import UssegError
from .provenance import package_version

log = logging.getLogger("usseg.runtime")

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
DEVICE_KINDS = ("auto", "cpu", "cuda", "tensorrt")  # cuda and tensorrt also take ":N", the GPU's index
DEVICE_HELP = "auto (TensorRT, then CUDA, then the CPU), cpu, cuda, cuda:N, tensorrt, tensorrt:N"
_DEVICE = re.compile(rf"^({'|'.join(DEVICE_KINDS)})(?::(\d{{1,2}}))?$")
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"


class ProviderError(UssegError, RuntimeError):
    """The requested device cannot be used; the message says why and what this build has."""


class ModelError(UssegError, ValueError):
    """A model file that is missing, unreadable, or carries no valid usseg contract."""


class OutOfMemoryError(UssegError, RuntimeError):
    """The device ran out of memory while opening or running the model."""


# -- the request --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRequest:
    kind: str           # auto | cpu | cuda | tensorrt
    index: int = 0      # the GPU, for cuda and tensorrt

    def __str__(self) -> str:
        return self.kind if self.kind in ("auto", "cpu") or self.index == 0 else f"{self.kind}:{self.index}"


def parse_device(text: str | DeviceRequest) -> DeviceRequest:
    """``auto | cpu | cuda | cuda:N | tensorrt | tensorrt:N`` -> DeviceRequest; ProviderError otherwise."""
    if isinstance(text, DeviceRequest):
        return text
    m = _DEVICE.match(str(text).strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) in ("auto", "cpu")):
        raise ProviderError(f"unknown device {text!r}; valid devices are {DEVICE_HELP}")
    return DeviceRequest(m.group(1), int(m.group(2) or 0))


# -- what is known of the model ----------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    precision: str = "unknown"   # fp32 | fp16 | int8 | unknown (from the contract's provenance)
    exact: bool = False          # in-graph preprocessing: exact integer arithmetic required

    @classmethod
    def from_contract(cls, contract: Any) -> ModelFacts:
        precision = contract.provenance.get("precision", "unknown")
        return cls(precision if isinstance(precision, str) else "unknown", contract.frame is not None)


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionPlan:
    """One way to open the model: the provider list with options, and what must hold afterwards."""

    device: str
    providers: tuple[tuple[str, dict[str, str]], ...]
    cuda_graph: str | None = None   # None | "cuda" (CUDA EP's enable_cuda_graph) | "tensorrt" (trt_cuda_graph_enable)
    cpu_nodes: bool = True          # the CPU provider may take nodes
    expect: str = CPU               # the provider that must be active first
    session_config: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.providers]

    @property
    def on_gpu(self) -> bool:
        return self.expect in (CUDA, TRT)

    @property
    def device_id(self) -> int:
        for _, options in self.providers:
            if "device_id" in options:
                return int(options["device_id"])
        return 0

    def options(self, name: str) -> dict[str, str]:
        return next((dict(opts) for n, opts in self.providers if n == name), {})

    def describe(self) -> str:
        graph = {"cuda": ", CUDA graph", "tensorrt": ", CUDA graph (TensorRT)"}.get(self.cuda_graph or "", "")
        gpu = f" on GPU {self.device_id}" if self.on_gpu else ""
        return f"{self.expect}{gpu}{graph}"


def cuda_options(cuda_graph: bool, exact: bool = False, device_id: int = 0) -> dict[str, str]:
    """``exact``: no TF32, and cuDNN's heuristic choice of convolution algorithm rather than the
    fastest one timed: graphs with in-graph preprocessing need float32 sums of integers to be
    exact, and a timed search is the likelier to pick an FFT or Winograd algorithm, which is not.
    The heuristics can pick those too on some GPU and shape; on an H200 the seed and realtime
    recipes' graphs came out equal to OpenCV on every pixel with it (``graph_check --device cuda``
    checks a GPU). Not "DEFAULT": with cuDNN 9, ONNX Runtime runs that through its slow fallback
    ("running in Fallback mode": the seed recipe's graph took 66 ms a frame there, 10 ms heuristic)."""
    options = {"device_id": str(device_id), "enable_cuda_graph": "1" if cuda_graph else "0",
               "cudnn_conv_algo_search": "HEURISTIC" if exact else "EXHAUSTIVE"}
    if exact:
        options["use_tf32"] = "0"
    return options


def tensorrt_options(cache_dir: str | Path, *, fp16: bool = False, cuda_graph: bool = False,
                     device_id: int = 0) -> dict[str, str]:
    """Engine and timing caches in ``cache_dir`` (the session factory creates it)."""
    return {"device_id": str(device_id), "trt_fp16_enable": "1" if fp16 else "0",
            "trt_cuda_graph_enable": "1" if cuda_graph else "0",
            "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(cache_dir)}


EXACT_NOTE = ("TensorRT is skipped for models with in-graph preprocessing: it may compute in TF32 or fp16, "
              "which breaks the exact integer arithmetic the recipe relies on")
TRT_LIBS_NOTE = ("TensorrtExecutionProvider is listed by this ONNX Runtime build but TensorRT's libraries "
                 "(libnvinfer) cannot be loaded; install TensorRT to use it")


def candidate_plans(request: str | DeviceRequest, available: Sequence[str], facts: ModelFacts = ModelFacts(), *,
                    cuda_graph: bool = True, cache_dir: str | Path = "", fp16: bool | None = None,
                    cpu_nodes: bool = True, tensorrt_loadable: bool | None = None,
                    hint: str | None = None) -> list[SessionPlan]:
    """The plans to try, best first. ``available``: ``ort.get_available_providers()``.

    ``cpu_nodes=False``: the CPU may take no node (benchmarks that must not time a silent CPU
    fallback); ``tensorrt_loadable=False``: ``auto`` skips TensorRT, whose libraries are missing.
    Raises ProviderError when the request cannot be met at all.
    """
    req = parse_device(request)
    device, notes = str(req), []
    if req.kind == "tensorrt" and facts.exact:
        raise ProviderError(f"device {device!r}: {EXACT_NOTE}; use device 'cuda'")
    gpu_name = {"cuda": CUDA, "tensorrt": TRT}.get(req.kind)
    if gpu_name is not None and gpu_name not in available:
        raise ProviderError(f"device {device!r}: {gpu_name} is not in this ONNX Runtime build "
                            f"(it has {list(available)}); {hint or gpu_hint()}")
    use_trt = req.kind == "tensorrt" or (req.kind == "auto" and TRT in available)
    if req.kind == "auto" and facts.exact:
        use_trt = False
        notes.append(EXACT_NOTE)
    if req.kind == "auto" and use_trt and tensorrt_loadable is False:
        use_trt = False
        notes.append(TRT_LIBS_NOTE)
    use_cuda = req.kind == "cuda" or (req.kind == "auto" and CUDA in available)
    if req.kind == "auto" and CUDA not in available:
        notes.append(f"{CUDA} is not in this ONNX Runtime build (it has {list(available)}); {hint or gpu_hint()}")
    tail = ((CPU, {}),) if cpu_nodes else ()
    config = () if cpu_nodes else ((DISABLE_CPU_FALLBACK, "1"),)
    trt_fp16 = fp16 if fp16 is not None else facts.precision == "fp16"
    plans: list[SessionPlan] = []
    if use_trt:
        cuda_behind = ((CUDA, cuda_options(False, facts.exact, req.index)),) if CUDA in available else ()
        for graph in ((True, False) if cuda_graph else (False,)):
            trt = (TRT, tensorrt_options(cache_dir, fp16=trt_fp16, cuda_graph=graph, device_id=req.index))
            plans.append(SessionPlan(device, (trt,) + cuda_behind + tail, "tensorrt" if graph else None, cpu_nodes, TRT,
                              config, tuple(notes)))
    if use_cuda:
        for graph in ((True, False) if cuda_graph else (False,)):
            plans.append(SessionPlan(device, ((CUDA, cuda_options(graph, facts.exact, req.index)),) + tail,
                              "cuda" if graph else None, cpu_nodes, CUDA, config, tuple(notes)))
    if req.kind in ("auto", "cpu"):
        plans.append(SessionPlan(device, ((CPU, {}),), None, True, CPU, (), tuple(notes)))
    return plans


def without_graph(plan: SessionPlan) -> SessionPlan:
    """The same providers without CUDA graphs (for a second session of dynamic shapes)."""
    providers = []
    for name, options in plan.providers:
        options = dict(options)
        for key in ("enable_cuda_graph", "trt_cuda_graph_enable"):
            if key in options:
                options[key] = "0"
        providers.append((name, options))
    return replace(plan, providers=tuple(providers), cuda_graph=None)


# -- failures ----------------------------------------------------------------------------------
# How ORT reports running out of memory: its arena ("BFCArena ... Failed to allocate memory for
# requested buffer of size N"), a CUDA call ("CUDA failure 2: out of memory", cuda_call.cc),
# cuBLAS/cuDNN ("..._STATUS_ALLOC_FAILED") or a host allocation (std::bad_alloc).
_OOM = re.compile(r"Failed to allocate memory|out of memory|CUDA failure 2\b|cudaErrorMemoryAllocation|"
                  r"ALLOC_FAILED|bad_alloc|BFCArena.*allocat", re.IGNORECASE)
_MODEL_TYPES = {"InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented"}
_MODEL_TEXT = re.compile(r"Protobuf parsing failed|Load model from .* failed|Invalid model|"
                         r"Unsupported model IR version|ONNX Runtime only \*guarantees\*", re.IGNORECASE)


def failure_kind(exc: BaseException) -> str:
    """'oom', 'model' or 'provider': what an ONNX Runtime exception is about."""
    text = str(exc)
    if isinstance(exc, MemoryError) or _OOM.search(text):
        return "oom"
    if type(exc).__name__ in _MODEL_TYPES or _MODEL_TEXT.search(text):
        return "model"
    return "provider"


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# -- the environment (not pure; small; ONNX Runtime imported on use) ---------------------------------------------------
def conflicting_ort_packages() -> list[str]:
    """Installed ONNX Runtime distributions; more than one means the CUDA provider may be lost."""
    names = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")
    return [name for name in names if package_version(name) is not None]


def gpu_hint() -> str:
    packages = conflicting_ort_packages()
    if len(packages) > 1:
        return (f"both {' and '.join(packages)} are installed, and then ONNX Runtime loses its CUDA provider: "
                f"`pip uninstall -y {' '.join(packages)} && pip install onnxruntime-gpu`")
    if packages == ["onnxruntime"]:
        return "this is the CPU build of ONNX Runtime: `pip uninstall -y onnxruntime && pip install onnxruntime-gpu`"
    return "install onnxruntime-gpu and a matching CUDA/cuDNN"


def warn_conflicting_packages(device: str) -> None:
    """Warn where two ONNX Runtime builds are installed and the CUDA provider is in fact missing;
    where the GPU build's files won (the CUDA provider listed), nothing is lost and nothing said."""
    import onnxruntime as ort

    packages = conflicting_ort_packages()
    if len(packages) > 1 and device != "cpu" and CUDA not in ort.get_available_providers():
        log.warning("%s are installed together: ONNX Runtime may silently lose its CUDA provider. %s",
                    " and ".join(packages), gpu_hint())


def default_cache_dir() -> Path:
    root = os.environ.get("USSEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "usseg")
    return Path(root) / "tensorrt"


def preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN libraries shipped in pip packages, where this ONNX Runtime can (>= 1.21)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - a missing library is reported when the session starts
            log.debug("onnxruntime.preload_dlls: %s", exc)
