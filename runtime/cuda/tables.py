"""What the fused kernels need from the host, worked out once per recipe and frame size.

Each table reproduces a constant that OpenCV computes internally (the non-local means weights, the
fixed-point Gaussian taps, INTER_AREA's per-axis weights, CLAHE's tiling and blend weights), in the
precision OpenCV uses, so that the kernels can run integer and float32 arithmetic only and still
give OpenCV's grey levels. Host code only: numpy and OpenCV, no CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..preprocess import Letterbox, Recipe

FUSED_DENOISERS = ("nlm", "none")
# The NLM launch: a block of NLM_THREADS threads covers NLM_TILE_W x NLM_TILE_H pixels (each thread
# accumulates NLM_TILE_W * NLM_TILE_H / NLM_THREADS of them) and walks half the search window.
NLM_TILE_W = 32
NLM_TILE_H = 32
NLM_THREADS = 128
NLM_TABLE_MAX = 4096  # non-zero NLM weights kept in shared memory (the seed recipe needs 133)
NLM_SHARED_MAX = 40 * 1024  # bytes of the NLM tile's window and weights
GAUSS_RADIUS_MAX = 32


# -- non-local means ----------------------------------------------------------------------------
def nlm_weights(h: float, template: int, search: int) -> tuple[np.ndarray, int]:
    """OpenCV's fixed-point NLM weights by "almost average" distance, cut after the last non-zero
    one, and the shift that turns a patch's sum of squared differences into that distance.

    OpenCV scales the weights so that a sum of weight x pixel over the search window fits int32
    (19,096 for a 21x21 window) and zeroes weights below 0.001 of that scale; the weights fall with
    the distance, so every distance past the returned table has weight 0.
    """
    squares = template * template
    shift = (squares - 1).bit_length()  # log2 of the power of two at or above the patch size
    to_distance = (1 << shift) / squares
    scale = (2 ** 31 - 1) // (search * search * 255)
    size = int(255 * 255 / to_distance + 1)
    distance = np.arange(size, dtype=np.float64) * to_distance
    h2 = float(np.float32(h) * np.float32(h))  # OpenCV squares h in float32
    weight = np.rint(np.exp(-distance / h2) * scale)
    weight[weight < 0.001 * scale] = 0
    nonzero = np.flatnonzero(weight)
    end = int(nonzero[-1]) + 1 if nonzero.size else 1
    return weight[:end].astype(np.int32), shift


# -- unsharp mask -------------------------------------------------------------------------------
def gaussian_ksize(sigma: float) -> int:
    """The kernel size GaussianBlur derives from sigma for 8-bit images (cvRound(6 sigma + 1) | 1)."""
    return round(sigma * 6 + 1) | 1


def gaussian_taps(sigma: float) -> np.ndarray:
    """OpenCV's fixed-point kernel (units of 1/256) that GaussianBlur uses on 8-bit images.

    Read back from cv2 itself: a full-height line of 255 blurred comes out as
    (255 * tap + 128) >> 8 in each column, which is inverted here (128 is the one output that two
    taps share, 128 and 129; the taps' sum of 256 tells them apart).
    """
    size = gaussian_ksize(sigma)
    n = 3 * size
    probe = np.zeros((n, n), np.uint8)
    probe[:, n // 2] = 255
    row = cv2.GaussianBlur(probe, (0, 0), sigma)[n // 2, n // 2 - size // 2: n // 2 + size // 2 + 1]
    seen = (255 * np.arange(257) + 128) >> 8
    taps = np.array([np.flatnonzero(seen == v)[0] for v in row.astype(np.int64)], np.int64)
    if taps.sum() != 256:
        taps[row == 128] += 1
    if taps.sum() != 256 or not np.array_equal(taps, taps[::-1]):
        raise ValueError(f"cannot read OpenCV's fixed-point Gaussian kernel for sigma {sigma}")
    return taps.astype(np.int32)


# -- INTER_AREA shrink --------------------------------------------------------------------------
def area_axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """INTER_AREA along one axis: per output index, its source indices [dst, taps] (ascending,
    padded with index 0) and float32 weights (padded with 0), read back from cv2 by shrinking an
    identity matrix (OpenCV keeps these weights as float32)."""
    weights = cv2.resize(np.eye(src, dtype=np.float64), (src, dst), interpolation=cv2.INTER_AREA)
    taps = int((weights > 0).sum(axis=1).max())
    index = np.zeros((dst, taps), np.int32)
    alpha = np.zeros((dst, taps), np.float32)
    for d, row in enumerate(weights):
        src_idx = np.flatnonzero(row > 0)
        index[d, :len(src_idx)], alpha[d, :len(src_idx)] = src_idx, row[src_idx]
    return index, alpha


@dataclass(frozen=True)
class ResizePlan:
    """How the frame becomes the letterbox content: ``copy`` (same size), ``block`` (an integer
    factor on each axis: OpenCV sums the block as integers) or ``taps`` (any other shrink)."""

    kind: str
    fy: int = 1
    fx: int = 1
    half_up: bool = False  # OpenCV rounds a 2x2 block's mean half up, any other block to even

    @classmethod
    def of(cls, box: Letterbox) -> ResizePlan:
        if (box.new_h, box.new_w) == (box.src_h, box.src_w):
            return cls("copy")
        if box.src_h % box.new_h == 0 and box.src_w % box.new_w == 0:
            fy, fx = box.src_h // box.new_h, box.src_w // box.new_w
            return cls("block", fy, fx, fy == fx == 2)
        return cls("taps")


# -- CLAHE --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaheTables:
    """OpenCV's CLAHE layout for an image: the image extended (reflect-101) at the bottom and right
    to a multiple of the grid, one clipped histogram per tile, and per row and per column the two
    nearest tiles with their float32 blend weights as OpenCV computes them."""

    tiles: int
    tile_h: int
    tile_w: int
    clip: int
    lut_scale: np.float32
    rows: np.ndarray  # int32 [H, 2]: upper and lower tile row
    row_w: np.ndarray  # float32 [H, 2]: weights of the upper (1 - ya) and lower (ya) tile
    cols: np.ndarray  # int32 [W, 2]: left and right tile column
    col_w: np.ndarray  # float32 [W, 2]

    @classmethod
    def of(cls, height: int, width: int, tiles: int, clip_limit: float) -> ClaheTables:
        exact = height % tiles == 0 and width % tiles == 0
        ext_h = height if exact else height + tiles - height % tiles
        ext_w = width if exact else width + tiles - width % tiles
        tile_h, tile_w = ext_h // tiles, ext_w // tiles
        area = tile_h * tile_w
        clip = max(int(clip_limit * area / 256), 1) if clip_limit > 0 else area + 1
        rows, row_w = cls._axis(height, tile_h, tiles)
        cols, col_w = cls._axis(width, tile_w, tiles)
        return cls(tiles, tile_h, tile_w, clip, np.float32(255) / np.float32(area), rows, row_w, cols, col_w)

    @staticmethod
    def _axis(size: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.arange(size, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
        low = np.floor(pos)
        frac = (pos - low).astype(np.float32)
        low = low.astype(np.int32)
        index = np.stack([np.maximum(low, 0), np.minimum(low + 1, tiles - 1)], axis=1).astype(np.int32)
        weight = np.stack([np.float32(1) - frac, frac], axis=1).astype(np.float32)
        return index, weight

    @property
    def ext_h(self) -> int:
        return self.tile_h * self.tiles

    @property
    def ext_w(self) -> int:
        return self.tile_w * self.tiles


def reciprocals() -> np.ndarray:
    """float32(1 / span) for each 8-bit span, as the host's min-max scales (0 for a flat image)."""
    out = np.zeros(256, np.float32)
    out[1:] = (1.0 / np.arange(1, 256, dtype=np.float64)).astype(np.float32)
    return out


# -- what the kernels support -------------------------------------------------------------------
@dataclass(frozen=True)
class NlmLayout:
    """The NLM kernel's shared memory for one tile: the tile's window (the tile plus the border on
    each side), the row sums of one offset and its weights, each flat with an odd row pitch so that
    a warp walking down a column reads 32 banks."""

    border: int
    win_w: int
    win_size: int
    row_w: int
    rows_size: int
    weight_w: int
    weights_size: int

    def shared_bytes(self, table_len: int) -> int:
        return 4 * (self.win_size + self.rows_size + self.weights_size + table_len)


def nlm_layout(template: int, search: int, tile_h: int, tile_w: int) -> NlmLayout:
    t, s = template // 2, search // 2
    border = t + s
    win_w, row_w = (tile_w + 2 * border) | 1, (tile_w + s) | 1
    # the row sums cover the tile, the tile moved by an offset, and the patch's rows above and below
    return NlmLayout(border, win_w, (tile_h + 2 * border) * win_w, row_w, (tile_h + s + 2 * t) * row_w,
                     row_w, (tile_h + s) * row_w)


def recipe_reason(recipe: Recipe) -> str | None:
    """Why the fused kernels cannot run ``recipe`` (None when they can)."""
    if recipe.denoise not in FUSED_DENOISERS:
        return (f"recipe '{recipe.name}' field 'denoise': {recipe.denoise!r} has no fused kernel "
                f"(supported: {list(FUSED_DENOISERS)})")
    if recipe.denoise == "nlm":
        if not recipe.nlm_h > 0:
            return f"recipe '{recipe.name}' field 'nlm_h': {recipe.nlm_h} must be > 0"
        table, _ = nlm_weights(recipe.nlm_h, recipe.nlm_template, recipe.nlm_search)
        if len(table) > NLM_TABLE_MAX:
            return (f"recipe '{recipe.name}' field 'nlm_h': {recipe.nlm_h} needs {len(table)} NLM weights, "
                    f"more than the {NLM_TABLE_MAX} the kernel keeps in shared memory")
        need = nlm_layout(recipe.nlm_template, recipe.nlm_search, NLM_TILE_H, NLM_TILE_W).shared_bytes(len(table))
        if need > NLM_SHARED_MAX:
            return (f"recipe '{recipe.name}' fields 'nlm_template'/'nlm_search': {recipe.nlm_template}/"
                    f"{recipe.nlm_search} need {need} bytes of shared memory per tile, over {NLM_SHARED_MAX}")
    if recipe.clahe and recipe.clahe_tile > 32:  # one warp per tile, a row of tiles per block
        return f"recipe '{recipe.name}' field 'clahe_tile': {recipe.clahe_tile} tiles per side, at most 32"
    if recipe.unsharp:
        if not recipe.unsharp_sigma > 0:
            return f"recipe '{recipe.name}' field 'unsharp_sigma': {recipe.unsharp_sigma} must be > 0"
        if gaussian_ksize(recipe.unsharp_sigma) // 2 > GAUSS_RADIUS_MAX:
            return (f"recipe '{recipe.name}' field 'unsharp_sigma': {recipe.unsharp_sigma} needs a blur "
                    f"radius over {GAUSS_RADIUS_MAX}")
    return None


def _is_side(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 2 <= n <= 16384


def size_reason(recipe: Recipe, frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> str | None:
    """Why the fused kernels cannot take ``frame_hw`` frames into an ``input_hw`` input (or None)."""
    sizes = []
    for name, size in (("frame", frame_hw), ("model input", input_hw)):
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(_is_side(n) for n in size):
            return f"{name} size {size!r}: expected (height, width), each an integer in [2, 16384]"
        sizes += [int(n) for n in size]
    box = Letterbox.fit(*sizes)
    if (box.new_h, box.new_w) != (box.src_h, box.src_w) and (box.new_h >= box.src_h or box.new_w > box.src_w):
        return (f"frame {box.src_h}x{box.src_w} -> content {box.new_h}x{box.new_w}: the fused kernels only "
                f"shrink (OpenCV's INTER_AREA); the host path enlarges")
    h, w = box.new_h, box.new_w
    if recipe.denoise == "nlm":
        border = recipe.nlm_template // 2 + recipe.nlm_search // 2
        if min(h, w) <= border:
            return f"content {h}x{w}: non-local means needs more than {border} px per side"
    if recipe.clahe:
        tiles = ClaheTables.of(h, w, recipe.clahe_tile, recipe.clahe_clip)
        if min(tiles.tile_h, tiles.tile_w) < 1 or tiles.ext_h - h >= h or tiles.ext_w - w >= w:
            return f"content {h}x{w}: too small for {recipe.clahe_tile}x{recipe.clahe_tile} CLAHE tiles"
    if recipe.unsharp:
        radius = gaussian_ksize(recipe.unsharp_sigma) // 2
        if min(h, w) <= radius:
            return f"content {h}x{w}: the unsharp mask needs more than {radius} px per side"
    return None
