"""The machine a benchmark ran on: every figure is printed with it."""

from __future__ import annotations

import platform
import shutil
import subprocess

from usseg.runtime.provenance import package_version, usable_cores


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict[str, object]:
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:
        pass
    ort = package_version("onnxruntime-gpu") or package_version("onnxruntime")
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "gpu": gpu_name(),
        "onnxruntime": ort,
        "cuda": cuda,
        "torch": package_version("torch"),
        "python": platform.python_version(),
    }


def describe(info: dict[str, object]) -> str:
    gpu = info.get("gpu") or "no GPU"
    return (f"{info['cpu']}, {info['cores']} cores, {gpu}; ONNX Runtime {info['onnxruntime']}, "
            f"CUDA {info.get('cuda') or '-'}, torch {info.get('torch') or '-'}, Python {info['python']}")
