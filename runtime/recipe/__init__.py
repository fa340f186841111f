"""The preprocessing recipe as a list of steps, each with its OpenCV and ONNX forms side by side.

    recipe.py     Recipe (the record stored in contracts), RECIPES, get_recipe, STEPS
    step.py       the Step base class and GraphRecipeError
    denoise.py    NlmDenoise, BilateralDenoise, MedianDenoise
    clahe.py      Clahe
    unsharp.py    Unsharp
    minmax.py     the final scaling to [0, 1]
    letterbox.py  Letterbox: the resize into the model input and the way back
    graph.py      recipe_graph: the whole chain as ONNX operators (imports onnx; import it directly)

A new step is one class in the step modules, listed in ``STEPS``, with its fields added to
``Recipe`` (the stored format is the flat record).
"""

from .clahe import Clahe
from .denoise import BilateralDenoise, MedianDenoise, NlmDenoise
from .fields import RecipeError
from .letterbox import Letterbox
from .minmax import minmax
from .recipe import DENOISERS, RECIPES, STEPS, Recipe, get_recipe, with_overrides
from .step import Denoiser, GraphRecipeError, Step
from .unsharp import Unsharp

__all__ = [
    "DENOISERS",
    "RECIPES",
    "STEPS",
    "BilateralDenoise",
    "Clahe",
    "Denoiser",
    "GraphRecipeError",
    "Letterbox",
    "MedianDenoise",
    "NlmDenoise",
    "Recipe",
    "RecipeError",
    "Step",
    "Unsharp",
    "get_recipe",
    "minmax",
    "with_overrides",
]
