"""Segmentation metrics shared by validation and evaluation (MONAI metrics on label maps).

Dice follows the seed: ``DiceMetric(include_background=False, reduction="mean_batch")`` on
one-hot label maps, a class absent from a ground truth is skipped for that frame
(``ignore_empty=True`` gives NaN), a class absent from every ground truth is NaN (not MONAI's 0),
and the mean Dice is the NaN-mean over classes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot


def _onehot(labels: Any, num_classes: int) -> torch.Tensor:
    """Label maps HxW or BxHxW (numpy or torch) -> float one-hot Bx C xHxW."""
    t = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels))
    if t.dim() == 2:
        t = t[None]
    return one_hot(t[:, None].long(), num_classes)


class DiceAccumulator:
    """Collects per-frame, per-class Dice; ``result()`` gives the seed's aggregate."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)

    def update(self, pred: Any, true: Any) -> np.ndarray:
        """Add label maps (HxW or BxHxW); returns their per-frame Dice, Bx(C-1), NaN = absent."""
        scores = self.metric(_onehot(pred, self.num_classes), _onehot(true, self.num_classes))
        return scores.cpu().numpy()

    def extend(self, per_frame: np.ndarray) -> None:
        """Add per-frame Dice rows Bx(C-1) computed elsewhere (by ``update`` on another process)."""
        self.metric.extend(torch.from_numpy(np.asarray(per_frame)))

    def per_frame(self) -> np.ndarray:
        buf = self.metric.get_buffer()
        if buf is None:
            return np.zeros((0, self.num_classes - 1))
        return buf.cpu().numpy()

    def result(self) -> np.ndarray:
        """Per-class Dice (C-1,), NaN for a class absent from every ground truth seen."""
        if self.metric.get_buffer() is None:
            return np.full(self.num_classes - 1, np.nan)
        agg = self.metric.aggregate().cpu().numpy().astype(np.float64)
        seen = ~np.isnan(self.per_frame()).all(axis=0)
        return np.where(seen, agg, np.nan)


def mean_dice(per_class: np.ndarray) -> float:
    """NaN-mean over classes; NaN when no class was present at all."""
    valid = per_class[~np.isnan(per_class)]
    return float(valid.mean()) if valid.size else float("nan")


def hd95(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """95th-percentile Hausdorff distance (px) per class (C-1,) of one frame's label maps.

    NaN where the ground truth lacks the class (nothing to measure) and where the prediction
    lacks a class the ground truth has (a miss, counted apart by the caller).
    """
    metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with warnings.catch_warnings():  # MONAI warns about every empty class
        warnings.simplefilter("ignore")
        scores = metric(_onehot(pred, num_classes), _onehot(true, num_classes))
    out = scores.cpu().numpy().astype(np.float64)[0]
    out[~np.isfinite(out)] = np.nan
    return out


def by_class(values: np.ndarray, classes: tuple[str, ...]) -> dict[str, float | None]:
    """{class name: value} for classes 1..C-1, NaN written as None so that JSON stays valid."""
    return {name: json_number(v) for name, v in zip(classes[1:], values)}


def json_number(v: Any) -> float | None:
    """A float for JSON: NaN becomes None (JSON has no NaN)."""
    v = float(v)
    return None if math.isnan(v) else v
