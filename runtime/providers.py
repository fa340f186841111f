"""Choosing ONNX Runtime execution providers: explicit, logged, never a silent CPU fallback when a
GPU was asked for."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import UssegError

log = logging.getLogger("usseg.runtime")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


class ProviderError(UssegError, RuntimeError):
    """The requested device cannot be used; the message says why and what this build has."""


@dataclass
class ProviderPlan:
    device: str                      # what was asked for
    providers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a provider was left out


def conflicting_ort_packages() -> list[str]:
    """Installed ONNX Runtime distributions; more than one means the CUDA provider may be lost."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            metadata.version(name)
            found.append(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _gpu_hint() -> str:
    packages = conflicting_ort_packages()
    if len(packages) > 1:
        return (f"both {' and '.join(packages)} are installed, and then ONNX Runtime loses its CUDA provider: "
                f"`pip uninstall -y {' '.join(packages)} && pip install onnxruntime-gpu`")
    if packages == ["onnxruntime"]:
        return "this is the CPU build of ONNX Runtime: `pip uninstall -y onnxruntime && pip install onnxruntime-gpu`"
    return "install onnxruntime-gpu and a matching CUDA/cuDNN"


def cuda_options(cuda_graph: bool, exact: bool = False) -> dict[str, Any]:
    """``exact``: no TF32 and cuDNN's default (direct) convolution algorithms rather than the
    fastest found, which may be FFT or Winograd: graphs with in-graph preprocessing need float32
    sums of integers to be exact."""
    options = {"device_id": 0, "enable_cuda_graph": "1" if cuda_graph else "0",
               "cudnn_conv_algo_search": "DEFAULT" if exact else "EXHAUSTIVE"}
    if exact:
        options["use_tf32"] = "0"
    return options


def tensorrt_options(cache_dir: Path) -> dict[str, Any]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {"device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir)}


EXACT_NOTE = ("TensorRT is skipped for models with in-graph preprocessing: it may compute in TF32 or fp16, "
              "which breaks the exact integer arithmetic the recipe relies on")


def plan_providers(device: str, cache_dir: Path, cuda_graph: bool = True, exact: bool = False) -> ProviderPlan:
    """The provider list for ``device``; ``auto`` tries TensorRT, then CUDA, then the CPU.
    ``exact`` (models with in-graph preprocessing): CUDA with exact options, never TensorRT."""
    if device not in DEVICES:
        raise ProviderError(f"unknown device {device!r}; valid devices are {list(DEVICES)}")
    if exact and device == "tensorrt":
        raise ProviderError(f"device 'tensorrt': {EXACT_NOTE}; use device 'cuda'")
    available = ort.get_available_providers()
    plan = ProviderPlan(device)
    packages = conflicting_ort_packages()
    if len(packages) > 1 and device != "cpu":
        log.warning("%s are installed together: ONNX Runtime may silently lose its CUDA provider. %s",
                    " and ".join(packages), _gpu_hint())
    wanted = {"auto": [TRT, CUDA, CPU], "cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TRT, CUDA, CPU]}[device]
    if exact and TRT in wanted:
        wanted.remove(TRT)
        plan.notes.append(EXACT_NOTE)
    for name in wanted:
        if name not in available:
            note = f"{name} is not in this ONNX Runtime build (it has {available}); {_gpu_hint()}"
            if device in ("cuda", "tensorrt") and name == {"cuda": CUDA, "tensorrt": TRT}[device]:
                raise ProviderError(f"device {device!r}: {note}")
            if name != CPU:
                plan.notes.append(note)
            continue
        if name == TRT:
            plan.providers.append((TRT, tensorrt_options(cache_dir)))
        elif name == CUDA:
            plan.providers.append((CUDA, cuda_options(cuda_graph, exact)))
        else:
            plan.providers.append((CPU, {}))
    return plan


def default_cache_dir() -> Path:
    root = os.environ.get("USSEG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "usseg")
    return Path(root) / "tensorrt"


def preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN libraries shipped in pip packages, where this ONNX Runtime can (>= 1.21)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # a missing library is reported when the session starts
            log.debug("onnxruntime.preload_dlls: %s", exc)
