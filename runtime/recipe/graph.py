"""The preprocessing recipe as ONNX operators, so that a model can take the raw uint8 frame.

``recipe_graph`` builds a graph from ``frame`` (uint8 [N, 1, H, W] at one fixed frame size) to the
model input (float32 [N, 1, h, w]): the letterbox shrink, each of the recipe's steps (their
``graph`` forms), min-max and padding, each reproducing OpenCV's integer arithmetic so that the
result matches ``usseg.runtime.preprocess.preprocess`` grey level for grey level. Exported in front
of the network (``usseg-export --graph-preprocess``), the whole pipeline runs inside ONNX Runtime
on whatever provider it has: one host-to-device copy of the frame in, one copy of the result out.

Only plain operators are used (Slice, Concat of ``nlm_search`` inputs -- 21 for the seed recipe,
under the 32 that ORT's CUDA-graph capture accepts --, Conv, Gather, CumSum, MatMul), so the graph
runs under any provider. Matching OpenCV exactly relies on float32 sums of integers below 2**24
and on float64 for the NLM's weighted sums, so the runtime runs these models on CUDA with TF32
off and cuDNN's heuristic convolution algorithms (a timed search is the likelier to pick FFT or
Winograd), and not under TensorRT; since the heuristics may still pick them on some GPU,
``python -m usseg.benchmarks.graph_check --device cuda`` checks a GPU against OpenCV.

This module needs onnx; the runtime's frame path never imports it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .letterbox import Letterbox
from .minmax import minmax_graph
from .recipe import STEPS, Recipe
from .step import Denoiser, GraphRecipeError

FRAME_INPUT = "frame"
GRAPH_DENOISERS = tuple(s.denoise for s in STEPS if issubclass(s, Denoiser) and s.in_graph) + ("none",)


class GraphBuilder:
    """Collects nodes and constants under a name prefix; each ``op`` returns its output name."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.initializers, self._count = prefix, [], [], 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs) -> str:
        out = self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def cast(self, x: str, dtype) -> str:
        return self.op("Cast", x, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64, "i")

    def slice(self, x: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        return self.op("Slice", x, self.ints(*starts), self.ints(*ends), self.ints(*axes))

    def round_half_up(self, x: str) -> str:
        """OpenCV's fixed-point rounding, (v + 1/2) floored."""
        return self.op("Floor", self.op("Add", x, self.const(0.5)))

    def clip8(self, x: str) -> str:
        return self.op("Clip", x, self.const(0.0), self.const(255.0))


def check_recipe(recipe: Recipe) -> None:
    """Raise GraphRecipeError when a step of ``recipe`` has no in-graph form."""
    for step in recipe.steps:
        if step.in_graph:
            continue
        if isinstance(step, Denoiser):
            raise GraphRecipeError(f"recipe '{recipe.name}' field 'denoise': {recipe.denoise!r} has no in-graph "
                                   f"form (supported: {list(GRAPH_DENOISERS)}); use host preprocessing")
        raise GraphRecipeError(f"recipe '{recipe.name}': {step.title} has no in-graph form; "
                               f"use host preprocessing")


def recipe_graph(recipe: Recipe, frame_h: int, frame_w: int, height: int, width: int,
                 batch: int | None = 1, output: str = "preprocessed", opset: int = 18,
                 expose_enhanced: bool = False, input_name: str = FRAME_INPUT) -> onnx.ModelProto:
    """uint8 ``input_name`` [N, 1, frame_h, frame_w] -> float32 ``output`` [N, 1, height, width].

    With ``expose_enhanced`` the 8-bit content after the recipe (before min-max and padding) is a
    second output, ``enhanced``, for checking each step against OpenCV.
    """
    check_recipe(recipe)
    if opset < 18:
        raise GraphRecipeError(f"opset {opset}: in-graph preprocessing needs opset >= 18")
    box = Letterbox.fit(frame_h, frame_w, height, width)
    g = GraphBuilder("pre/")
    x = box.graph_resize(g, g.cast(input_name, np.float32))
    for step in recipe.steps:
        try:
            x = step.graph(g, x, box.new_h, box.new_w)
        except GraphRecipeError as exc:
            raise GraphRecipeError(f"recipe '{recipe.name}': {exc}") from None
    enhanced = x
    y = box.graph_place(g, minmax_graph(g, x))
    g.nodes.append(helper.make_node("Identity", [y], [output], name=f"{g.prefix}{output}"))
    n = batch if batch else "batch"
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, [n, 1, height, width])]
    if expose_enhanced:
        g.nodes.append(helper.make_node("Identity", [enhanced], ["enhanced"], name=f"{g.prefix}enhanced"))
        outputs.append(helper.make_tensor_value_info("enhanced", TensorProto.FLOAT, [n, 1, box.new_h, box.new_w]))
    graph = helper.make_graph(
        g.nodes, "usseg_preprocess",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, [n, 1, frame_h, frame_w])],
        outputs, g.initializers)
    # The oldest IR version for the opset, not the installed onnx's newest: an ONNX Runtime older than
    # that onnx refuses a newer IR version even where nothing in the graph needs it.
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="usseg",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model
