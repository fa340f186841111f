"""usseg.runtime: the lean inference runtime (ONNX Runtime + Numba). Never imports torch."""

from .contract import Contract, ContractError, InputSpec, PostprocessSpec
from .preprocess import FrameError, Letterbox, Recipe, get_recipe, preprocess, to_grey8

__all__ = [
    "Contract", "ContractError", "InputSpec", "PostprocessSpec",
    "FrameError", "Letterbox", "Recipe", "get_recipe", "preprocess", "to_grey8",
]
