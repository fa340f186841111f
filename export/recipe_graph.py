"""The preprocessing recipe as ONNX operators, so that a model can take the raw uint8 frame.

``recipe_graph`` builds a graph from ``frame`` (uint8 [N, 1, H, W] at one fixed frame size) to the
model input (float32 [N, 1, h, w]): letterbox resize, non-local means, CLAHE, unsharp mask, min-max
and padding, each reproducing OpenCV's integer arithmetic so that the result matches
``usseg.runtime.preprocess.preprocess`` grey level for grey level. Exported in front of the network
(``usseg-export --graph-preprocess``), the whole pipeline runs inside ONNX Runtime on whatever
provider it has: one host-to-device copy of the frame in, one copy of the result out.

Only plain operators are used (Slice, Concat of ``nlm_search`` inputs -- 21 for the seed recipe,
under the 32 that ORT's CUDA-graph capture accepts --, Conv, Gather, CumSum, MatMul), so the graph
runs under any provider. Matching OpenCV exactly relies on float32 sums of integers below 2**24
and on float64 for the NLM's weighted sums, so the runtime runs these models on CUDA with TF32
off and cuDNN's default (direct) convolution algorithms, and not under TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from usseg.runtime.errors import UssegError
from usseg.runtime.preprocess import Letterbox, Recipe

FRAME_INPUT = "frame"
GRAPH_DENOISERS = ("nlm", "none")


class GraphRecipeError(UssegError, ValueError):
    """A recipe or frame size that the in-graph preprocessing cannot express."""


class _Builder:
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

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64, "i")

    def slice(self, x: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        return self.op("Slice", x, self.ints(*starts), self.ints(*ends), self.ints(*axes))

    def round_half_up(self, x: str) -> str:
        """OpenCV's fixed-point rounding, (v + 1/2) floored."""
        return self.op("Floor", self.op("Add", x, self.const(0.5)))

    def clip8(self, x: str) -> str:
        return self.op("Clip", x, self.const(0.0), self.const(255.0))


# -- letterbox resize ---------------------------------------------------------------------------
def _axis_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] matrix of OpenCV's INTER_AREA weights along one axis (an identity image resized)."""
    return cv2.resize(np.eye(src, dtype=np.float64), (src, dst), interpolation=cv2.INTER_AREA).astype(np.float32)


def _area_taps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output index, its source indices and weights in ascending source order, padded with
    zero weights: [taps, dst] each."""
    count = int((weights > 0).sum(axis=1).max())
    index = np.zeros((count, weights.shape[0]), np.int64)
    alpha = np.zeros((count, weights.shape[0]), np.float32)
    for d, row in enumerate(weights):
        src = np.flatnonzero(row > 0)
        index[:len(src), d], alpha[:len(src), d] = src, row[src]
    return index, alpha


def _weighted_taps(g: _Builder, x: str, weights: np.ndarray, axis: int) -> str:
    """Sum of weight x source along ``axis``, added tap by tap in OpenCV's order (float32)."""
    index, alpha = _area_taps(weights)
    shape = [1, 1, 1, -1] if axis == 3 else [1, 1, -1, 1]
    total = None
    for idx, a in zip(index, alpha):
        term = g.op("Mul", g.op("Gather", x, g.const(idx, np.int64, "taps"), axis=axis),
                    g.const(a.reshape(shape), hint="alpha"))
        total = term if total is None else g.op("Add", total, term)
    return total


def _resize(g: _Builder, x: str, box: Letterbox) -> str:
    """cv2.resize INTER_AREA shrink. Enlarging (OpenCV's fixed-point bilinear path, whose
    vectorised rounding is not reproduced here) is refused, and so is a shrink of the width
    alone, which the host path does bilinearly too."""
    if (box.new_h, box.new_w) == (box.src_h, box.src_w):
        return x
    if box.new_h >= box.src_h or box.new_w > box.src_w:
        raise GraphRecipeError(f"frame {box.src_h}x{box.src_w} -> content {box.new_h}x{box.new_w}: in-graph "
                               f"preprocessing only shrinks both sides (OpenCV's INTER_AREA); export for the "
                               f"probe's frame size or use host preprocessing")
    fy, fx = box.src_h / box.new_h, box.src_w / box.new_w
    rows, cols = _axis_weights(box.src_h, box.new_h), _axis_weights(box.src_w, box.new_w)
    if fy == fx == int(fy):
        # Integer factor k: OpenCV sums the k x k block as integers (exact here as a product of
        # 0/1 matrices), then rounds half up for k = 2 and rounds sum * float(1 / k^2) to even otherwise.
        k = int(fy)
        ones_rows, ones_cols = (rows > 0).astype(np.float32), (cols > 0).astype(np.float32)
        total = g.op("MatMul", g.const(ones_rows, hint="block_rows"),
                     g.op("MatMul", x, g.const(ones_cols.T, hint="block_cols")))
        if k == 2:
            y = g.op("Floor", g.op("Div", g.op("Add", total, g.const(2.0)), g.const(4.0)))
        else:
            y = g.op("Round", g.op("Mul", total, g.const(np.float32(1) / np.float32(k * k))))
    else:
        # General case: float32 sums along each row first, then down, rounded to nearest even.
        y = g.op("Round", _weighted_taps(g, _weighted_taps(g, x, cols, axis=3), rows, axis=2))
    return g.clip8(y)


# -- non-local means ----------------------------------------------------------------------------
def nlm_weight_table(h: float, template: int, search: int) -> tuple[np.ndarray, int]:
    """OpenCV's fixed-point weight for each "almost average" patch distance, and the shift that
    turns a patch's sum of squared differences into that distance."""
    squares = template * template
    shift = (squares - 1).bit_length()  # the power of two at or above the patch size
    to_distance = (1 << shift) / squares
    scale = min((2 ** 31 - 1) // (search * search * 255), 2 ** 31 - 1)
    size = int(255 * 255 / to_distance + 1)
    dist = np.arange(size, dtype=np.float64) * to_distance
    weight = np.floor(np.exp(-dist / (h * h)) * scale + 0.5)
    weight[weight < 0.001 * scale] = 0
    return weight.astype(np.int32), shift


def _nlm(g: _Builder, x: str, height: int, width: int, recipe: Recipe) -> str:
    """cv2.fastNlMeansDenoising: every offset of the search window as one channel of a stack."""
    t, s = recipe.nlm_template // 2, recipe.nlm_search // 2
    border = t + s
    if min(height, width) <= border:
        raise GraphRecipeError(f"recipe '{recipe.name}': non-local means needs content larger than "
                               f"{border} px, got {height}x{width}")
    table, shift = nlm_weight_table(recipe.nlm_h, recipe.nlm_template, recipe.nlm_search)
    n = recipe.nlm_search
    ext_h, ext_w = height + 2 * t, width + 2 * t  # where patch sums are needed
    pad = g.op("Pad", x, g.ints(0, 0, border, border, 0, 0, border, border), mode="reflect")
    rows = [g.slice(pad, [dy], [dy + ext_h], [2]) for dy in range(n)]
    stack_rows = g.op("Concat", *rows, axis=1)  # [N, n, ext_h, W + 2 * border]
    cols = [g.op("Unsqueeze", g.slice(stack_rows, [dx], [dx + ext_w], [3]), g.ints(2)) for dx in range(n)]
    shifted = g.op("Concat", *cols, axis=2)  # [N, n(dy), n(dx), ext_h, ext_w]
    shifted = g.op("Reshape", shifted, g.ints(0, n * n, ext_h, ext_w))
    centre = g.slice(pad, [s, s], [s + ext_h, s + ext_w], [2, 3])
    diff = g.op("Sub", shifted, centre)
    squares = g.op("Mul", diff, diff)
    k = recipe.nlm_template
    # Patch sums of squared differences: a depthwise Conv with a kernel of ones adds integers
    # below 2**24, exact in float32 (without TF32 and with a direct convolution algorithm).
    ones = g.const(np.ones((n * n, 1, k, k), np.float32), hint="patch")
    ssd = g.op("Conv", squares, ones, group=n * n)
    # floor(S / 2**shift): a division by a power of two is exact, the cast truncates.
    index = g.op("Cast", g.op("Div", ssd, g.const(float(1 << shift))), to=TensorProto.INT32)
    # The weighted sums reach 2.1e9: float64 keeps them exact on every provider.
    weight = g.op("Gather", g.const(table, np.float64, "nlm_weights"), index, axis=0)  # [N, n*n, H, W]
    values = g.op("Cast", g.slice(shifted, [t, t], [t + height, t + width], [2, 3]), to=TensorProto.DOUBLE)
    axis = g.ints(1)
    estimate = g.op("ReduceSum", g.op("Mul", weight, values), axis, keepdims=1)
    total = g.op("ReduceSum", weight, axis, keepdims=1)
    half = g.op("Floor", g.op("Div", total, g.const(2.0, np.float64)))
    out = g.op("Floor", g.op("Div", g.op("Add", estimate, half), total))  # OpenCV's integer division
    return g.op("Cast", out, to=TensorProto.FLOAT)


# -- CLAHE --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaheLayout:
    """OpenCV's tiling of an image for CLAHE: the image is extended (reflect-101) to a multiple of
    the grid, each tile gets a clipped histogram, and each pixel blends its four nearest tiles."""

    tiles: int
    tile_h: int
    tile_w: int
    pad_bottom: int
    pad_right: int
    clip: int
    lut_scale: np.float32

    @classmethod
    def of(cls, height: int, width: int, tiles: int, clip_limit: float) -> "ClaheLayout":
        pad_b = 0 if height % tiles == 0 and width % tiles == 0 else tiles - height % tiles
        pad_r = 0 if height % tiles == 0 and width % tiles == 0 else tiles - width % tiles
        tile_h, tile_w = (height + pad_b) // tiles, (width + pad_r) // tiles
        area = tile_h * tile_w
        clip = max(int(clip_limit * area / 256), 1) if clip_limit > 0 else area
        return cls(tiles, tile_h, tile_w, pad_b, pad_r, clip, np.float32(255.0) / np.float32(area))

    def blend(self, height: int, width: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Per pixel: the LUT offsets of its four tiles [4, H*W] (top-left, top-right,
        bottom-left, bottom-right) and the weights (left, right, top, bottom), each [H*W]."""
        def axis(size: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pos = np.arange(size, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
            lo = np.floor(pos)
            frac = (pos - lo).astype(np.float32)
            lo = lo.astype(np.int64)
            return np.maximum(lo, 0), np.minimum(lo + 1, self.tiles - 1), frac

        y1, y2, ya = axis(height, self.tile_h)
        x1, x2, xa = axis(width, self.tile_w)
        offsets = [((ty[:, None] * self.tiles + tx[None, :]) * 256).ravel()
                   for ty in (y1, y2) for tx in (x1, x2)]
        grid = np.ones((height, width), np.float32)
        left, right = (grid * (np.float32(1) - xa)[None, :]).ravel(), (grid * xa[None, :]).ravel()
        top, bottom = (grid * (np.float32(1) - ya)[:, None]).ravel(), (grid * ya[:, None]).ravel()
        return np.stack(offsets), (left, right, top, bottom)


def _clahe(g: _Builder, x: str, height: int, width: int, recipe: Recipe) -> str:
    """cv2.createCLAHE(clip, (tiles, tiles)).apply on 8-bit grey."""
    n = recipe.clahe_tile
    layout = ClaheLayout.of(height, width, n, recipe.clahe_clip)
    if layout.tile_h < 1 or layout.tile_w < 1 or height <= layout.pad_bottom or width <= layout.pad_right:
        raise GraphRecipeError(f"recipe '{recipe.name}': content {height}x{width} is too small for "
                               f"{n}x{n} CLAHE tiles")
    ext = x
    if layout.pad_bottom or layout.pad_right:
        ext = g.op("Pad", x, g.ints(0, 0, 0, 0, 0, 0, layout.pad_bottom, layout.pad_right), mode="reflect")
    area = layout.tile_h * layout.tile_w
    tiles = g.op("Reshape", ext, g.ints(-1, n, layout.tile_h, n, layout.tile_w))
    tiles = g.op("Transpose", tiles, perm=[0, 1, 3, 2, 4])
    tiles = g.op("Reshape", tiles, g.ints(-1, n * n, area, 1))
    # Histogram of v = 16 hi + lo as a matrix product of two 16-wide one-hot codes (16x less
    # memory than a 256-wide one): hist[hi, lo] = sum over pixels of onehot(hi) x onehot(lo).
    sixteen = g.const(16.0)
    high = g.op("Floor", g.op("Div", tiles, sixteen))
    low = g.op("Sub", tiles, g.op("Mul", high, sixteen))
    codes = g.const(np.arange(16, dtype=np.float32).reshape(1, 1, 1, 16), hint="codes")
    high = g.op("Cast", g.op("Equal", high, codes), to=TensorProto.FLOAT)  # [N, n*n, area, 16]
    low = g.op("Cast", g.op("Equal", low, codes), to=TensorProto.FLOAT)
    hist = g.op("MatMul", g.op("Transpose", high, perm=[0, 1, 3, 2]), low)  # [N, n*n, 16, 16]
    hist = g.op("Reshape", hist, g.ints(-1, n * n, 256))
    # Clip, then deal the excess out evenly and the remainder one by one from bin 0 in steps.
    limit = g.const(float(layout.clip))
    excess = g.op("ReduceSum", g.op("Relu", g.op("Sub", hist, limit)), g.ints(2), keepdims=1)
    hist = g.op("Min", hist, limit)
    c256 = g.const(256.0)
    batch = g.op("Floor", g.op("Div", excess, c256))
    residual = g.op("Sub", excess, g.op("Mul", batch, c256))
    step = g.op("Max", g.op("Floor", g.op("Div", c256, g.op("Max", residual, g.const(1.0)))), g.const(1.0))
    bins = g.const(np.arange(256, dtype=np.float32), hint="bins")
    k = g.op("Floor", g.op("Div", bins, step))
    on_step = g.op("Equal", g.op("Mul", k, step), bins)
    extra = g.op("Cast", g.op("And", on_step, g.op("Less", k, residual)), to=TensorProto.FLOAT)
    hist = g.op("Add", g.op("Add", hist, batch), extra)
    cdf = g.op("CumSum", hist, g.const(2, np.int64))
    lut = g.clip8(g.op("Round", g.op("Mul", cdf, g.const(layout.lut_scale))))
    lut = g.op("Reshape", lut, g.ints(-1, n * n * 256))
    # Blend the four nearest tiles' LUTs per pixel, in OpenCV's order of operations.
    offsets, weights = layout.blend(height, width)
    value = g.op("Cast", g.op("Reshape", x, g.ints(-1, height * width)), to=TensorProto.INT64)
    picked = [g.op("GatherElements", lut, g.op("Add", value, g.const(off[None], np.int64, "tile")), axis=1)
              for off in offsets]
    left, right, top, bottom = (g.const(w[None], hint="clahe_w") for w in weights)
    upper = g.op("Add", g.op("Mul", picked[0], left), g.op("Mul", picked[1], right))
    lower = g.op("Add", g.op("Mul", picked[2], left), g.op("Mul", picked[3], right))
    out = g.op("Add", g.op("Mul", upper, top), g.op("Mul", lower, bottom))
    out = g.clip8(g.op("Round", out))
    return g.op("Reshape", out, g.ints(-1, 1, height, width))


# -- unsharp mask -------------------------------------------------------------------------------
def gaussian_fixed_point(sigma: float) -> np.ndarray:
    """OpenCV's 8-bit GaussianBlur kernel for ``sigma`` (ksize from sigma): integer taps in units
    of 1/256, read back from cv2 itself by blurring a line of 255s."""
    size = int(round(sigma * 3 * 2 + 1)) | 1
    probe = np.zeros((3 * size, 3 * size), np.uint8)
    probe[:, 3 * size // 2] = 255
    row = cv2.GaussianBlur(probe, (0, 0), sigma)[3 * size // 2].astype(np.int64)
    taps = row[3 * size // 2 - size // 2: 3 * size // 2 + size // 2 + 1]
    # round(255 * m / 256) half up is m for m <= 128 and m - 1 above: invert that.
    taps = np.where(taps >= 128, taps + 1, taps)
    if taps.sum() != 256:
        raise GraphRecipeError(f"cannot read OpenCV's fixed-point Gaussian kernel for sigma {sigma}")
    return taps


def _unsharp(g: _Builder, x: str, height: int, width: int, recipe: Recipe) -> str:
    """addWeighted(img, a, GaussianBlur(img, sigma), 1 - a, 0) with OpenCV's bit-exact blur."""
    taps = gaussian_fixed_point(recipe.unsharp_sigma).astype(np.float32)
    r = len(taps) // 2
    if min(height, width) <= r:
        raise GraphRecipeError(f"recipe '{recipe.name}': the unsharp mask needs content larger than {r} px, "
                               f"got {height}x{width}")
    pad = g.op("Pad", x, g.ints(0, 0, r, r, 0, 0, r, r), mode="reflect")
    across = g.op("Conv", pad, g.const(taps.reshape(1, 1, 1, -1), hint="gauss_x"))
    down = g.op("Conv", across, g.const(taps.reshape(1, 1, -1, 1), hint="gauss_y"))
    blur = g.op("Floor", g.op("Div", g.op("Add", down, g.const(32768.0)), g.const(65536.0)))
    a = np.float32(recipe.unsharp_amount)
    mixed = g.op("Add", g.op("Mul", x, g.const(a)), g.op("Mul", blur, g.const(np.float32(1.0) - a)))
    return g.clip8(g.op("Round", mixed))


# -- min-max and letterbox padding --------------------------------------------------------------
def _minmax(g: _Builder, x: str) -> str:
    axes = g.ints(2, 3)
    lo = g.op("ReduceMin", x, axes, keepdims=1)
    span = g.op("Sub", g.op("ReduceMax", x, axes, keepdims=1), lo)
    scaled = g.op("Mul", g.op("Sub", x, lo), g.op("Reciprocal", g.op("Max", span, g.const(1.0))))
    return g.op("Where", g.op("Greater", span, g.const(0.0)), scaled, g.const(0.0))


def check_recipe(recipe: Recipe) -> None:
    if recipe.denoise not in GRAPH_DENOISERS:
        raise GraphRecipeError(f"recipe '{recipe.name}' field 'denoise': {recipe.denoise!r} has no in-graph "
                               f"form (supported: {list(GRAPH_DENOISERS)}); use host preprocessing")


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
    g = _Builder("pre/")
    x = g.op("Cast", input_name, to=TensorProto.FLOAT)
    x = _resize(g, x, box)
    if recipe.denoise == "nlm":
        x = _nlm(g, x, box.new_h, box.new_w, recipe)
    if recipe.clahe:
        x = _clahe(g, x, box.new_h, box.new_w, recipe)
    if recipe.unsharp:
        x = _unsharp(g, x, box.new_h, box.new_w, recipe)
    enhanced = x
    y = _minmax(g, x)
    pads = [0, 0, box.top, box.left, 0, 0, height - box.top - box.new_h, width - box.left - box.new_w]
    if any(pads):
        y = g.op("Pad", y, g.ints(*pads), mode="constant")
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="usseg")
    onnx.checker.check_model(model)
    return model
