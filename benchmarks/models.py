"""Frames and folders for the benchmarks. The timed models themselves are trained and cached by
:mod:`usseg.benchmarks.weights`: timing the post-processing needs label maps like a trained
network's, so no benchmark times an untrained network."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

BENCH_H, BENCH_W = 480, 640
FRAMES_SEED = 424242  # the timed frames: a seed no training set uses


def cache_dir() -> Path:
    """Where trained models and exports are cached: $USSEG_BENCH_DIR (usseg-bench sets OUT/models)."""
    path = Path(os.environ.get("USSEG_BENCH_DIR", Path.home() / ".cache" / "usseg" / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def phantom_frames(count: int = 8, seed: int = FRAMES_SEED, height: int = BENCH_H, width: int = BENCH_W) -> list[np.ndarray]:
    from usseg.train.phantom import phantom_frames as generate

    return generate(count, seed, height, width)


def timed_frames(count: int, height: int, width: int, seed: int = FRAMES_SEED) -> tuple[list[np.ndarray], list[float]]:
    """The frames every row is timed on, and the share of their pixels in each class (background,
    MID, VTB, EPI) by the phantom's own annotations: what a trained network should roughly give."""
    from usseg.train.phantom import PhantomConfig, generate_frame
    from usseg.train.seedformat import draw_mask, parse_shapes

    cfg = PhantomConfig(height=height, width=width)
    frames, counts = [], np.zeros(4, np.int64)
    for i in range(count):
        image, shapes = generate_frame(cfg, seed, i)
        frames.append(image)
        mask = draw_mask(parse_shapes(shapes, f"frame {i}"), height, width)
        counts += np.bincount(mask.ravel(), minlength=4)[:4]
    return frames, [float(c) for c in counts / counts.sum()]


def calibration_folder(cache: Path, count: int = 8) -> Path:
    """Phantom frames as PNGs, for int8 calibration of a given checkpoint (no data set known)."""
    import cv2

    folder = cache / "calibration"
    if not folder.is_dir() or len(list(folder.glob("*.png"))) < count:
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(phantom_frames(count, seed=77)):
            cv2.imwrite(str(folder / f"cal_{i:03d}.png"), frame)
    return folder
