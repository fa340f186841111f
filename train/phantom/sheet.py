"""A contact sheet for judging the phantom by eye: frames with and without their shapes drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..io import read_grey8, write_png
from .config import PhantomConfig, Shape
from .generate import generate_frame

_COLOURS = {"MID": (255, 80, 80), "VTB": (80, 220, 80), "EPI": (80, 160, 255)}  # RGB


def overlay_shapes(image: np.ndarray, shapes: Sequence[Shape], alpha: float = 0.4) -> np.ndarray:
    """RGB copy of a grey frame with the shapes drawn the way masks are drawn (10-px lines, filled rects)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    layer = rgb.copy()
    for label, kind, (p, q) in shapes:
        if kind == "rect":
            cv2.rectangle(layer, tuple(p), tuple(q), _COLOURS[label], -1)
        else:
            cv2.line(layer, tuple(p), tuple(q), _COLOURS[label], 10)
    out = cv2.addWeighted(layer, alpha, rgb, 1 - alpha, 0)
    for label, kind, (p, q) in shapes:  # crisp outline on top
        if kind == "rect":
            cv2.rectangle(out, tuple(p), tuple(q), _COLOURS[label], 2)
        else:
            cv2.line(out, tuple(p), tuple(q), _COLOURS[label], 2)
    return out


def _label(tile: np.ndarray, text: str) -> None:
    """Caption in the tile's top-left corner, outlined so that it reads on any background."""
    scale = tile.shape[1] / 400
    org = (6, int(18 * scale) + 4)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (255, 255, 0), 1, cv2.LINE_AA)


def _fit(image: np.ndarray, tw: int, th: int) -> np.ndarray:
    """Resize to fit tw x th keeping the aspect ratio, centred on black."""
    h, w = image.shape[:2]
    f = min(tw / w, th / h)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((th, tw) + image.shape[2:], image.dtype)
    y, x = (th - small.shape[0]) // 2, (tw - small.shape[1]) // 2
    tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    return tile


def contact_sheet(path: str | Path, cfg: PhantomConfig | None = None, seed: int = 0,
                  sample: str | Path | None = None, cols: int = 4, rows: int = 3, tile_width: int = 320) -> Path:
    """A grid of phantom frames (every other one with its annotation drawn) and, if given, the real
    sample frame in the first tile, for judging the phantom by eye. Written as an RGB PNG."""
    cfg = cfg or PhantomConfig()
    tile_h = round(tile_width * cfg.height / cfg.width)
    n = rows * cols - (1 if sample else 0)
    frames = [(i, *generate_frame(cfg, seed, i)) for i in range(n)]
    # show the rarer kinds too: an off-midline frame ([]) and a spinous-process view (MID only)
    slot, index = n - 1, n
    for wanted in ([], ["MID"]):
        if n < 4 or any([s[0] for s in shapes] == wanted for _, _, shapes in frames):
            continue
        for index in range(index, index + 500):
            image, shapes = generate_frame(cfg, seed, index)
            if [s[0] for s in shapes] == wanted:
                frames[slot] = (index, image, shapes)
                slot -= 1
                break
        index += 1
    tiles = []
    if sample:
        real = _fit(cv2.cvtColor(read_grey8(sample), cv2.COLOR_GRAY2RGB), tile_width, tile_h)
        _label(real, f"REAL sample {Path(sample).stem}")
        tiles.append(real)
    for k, (i, image, shapes) in enumerate(frames):
        annotated = k % 2 == 1
        rgb = overlay_shapes(image, shapes) if annotated else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        tile = _fit(rgb, tile_width, tile_h)
        labels = [label for label, _, _ in shapes]
        present = {0: "none (off-midline)", 1: "MID only"}.get(len(labels), " ".join(labels))
        _label(tile, f"phantom {i}: {present}" + (" [drawn]" if annotated else ""))
        tiles.append(tile)
    grid = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    path = Path(path)
    write_png(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
