"""The preprocessing recipe as ONNX operators (``usseg-export --graph-preprocess``).

The graph builder lives beside the steps it assembles, in ``usseg.runtime.recipe.graph``: each
step's ONNX form sits next to its OpenCV form in ``usseg.runtime.recipe``. These names are kept
here for the export code and its callers.
"""

from usseg.runtime.recipe.clahe import ClaheLayout
from usseg.runtime.recipe.denoise import nlm_weight_table
from usseg.runtime.recipe.graph import FRAME_INPUT, GRAPH_DENOISERS, GraphBuilder, check_recipe, recipe_graph
from usseg.runtime.recipe.step import GraphRecipeError
from usseg.runtime.recipe.unsharp import gaussian_fixed_point

__all__ = [
    "FRAME_INPUT", "GRAPH_DENOISERS", "ClaheLayout", "GraphBuilder", "GraphRecipeError", "check_recipe",
    "gaussian_fixed_point", "nlm_weight_table", "recipe_graph",
]
