"""usseg.runtime: the lean inference runtime (ONNX Runtime + Numba). Never imports torch.

``Segmenter`` (and the other ONNX Runtime-backed names) load lazily, on first use, so that
importing the package for its preprocessing or contract does not load ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from .contract import Contract, ContractError, InputSpec, PostprocessSpec
from .errors import UssegError
from .preprocess import FrameError, Letterbox, Recipe, get_recipe, preprocess, to_grey8

_LAZY = {
    "Segmenter": ".segmenter",
    "ModelError": ".providers",
    "ProviderError": ".providers",
    "Result": ".result",
}

__all__ = [
    "Contract", "ContractError", "FrameError", "InputSpec", "Letterbox", "PostprocessSpec", "Recipe",
    "UssegError", "get_recipe", "preprocess", "to_grey8", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
