"""What made an output, so that a result can be traced to the exact model that made it.

``provenance(seg)``: the model file and its SHA-256, the contract's classes and recipe, the usseg
and ONNX Runtime versions, the provider, and the time the output was made (UTC). A Segmenter
describes itself (``Segmenter.model_info()``); another frame pipeline (the Triton client, whose
model file lives on the server) is described from its public attributes.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from importlib import metadata
from typing import Any


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset narrows),
    as thread pools should count them and machine reports name them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usseg_version() -> str:
    """This package's installed version; "unknown" when run from a source tree that is not installed."""
    return package_version("usseg") or "unknown"


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def describe(seg: Any) -> dict[str, Any]:
    """The model facts of a frame pipeline that has no ``model_info()``."""
    contract = seg.contract
    return {"model": str(seg.path), "sha256": getattr(seg, "sha256", None), "classes": list(contract.classes),
            "recipe": contract.recipe.to_dict(), "output": contract.output,
            "precision": contract.provenance.get("precision"), "usseg": package_version("usseg"),
            "onnxruntime": _onnxruntime_version(), "provider": getattr(seg, "provider", None)}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(seg: Any) -> dict[str, Any]:
    """The model facts of ``seg`` plus ``time``: when the output they go with was made."""
    info = seg.model_info() if callable(getattr(seg, "model_info", None)) else describe(seg)
    return {**info, "time": now_utc()}
