"""Segmentation metrics shared by validation and evaluation (MONAI metrics on label maps).

Dice follows the seed: ``DiceMetric(include_background=False, reduction="mean_batch")`` on
one-hot label maps, a class absent from a ground truth is skipped for that frame
(``ignore_empty=True`` gives NaN), a class absent from every ground truth is NaN (not MONAI's 0),
and the mean Dice is the NaN-mean over classes. That figure says nothing about frames where a
structure is absent; ``SplitScores`` adds what the field reports besides it (false positives on
those frames, Dice over all pixels of the split, detection rate). The Dice of two empty maps is
undefined (NaN), never 1.
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


def label_dice(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class Dice (C-1,) of two label maps; NaN for a class that neither map has (undefined)."""
    pred, true = np.asarray(pred), np.asarray(true)
    out = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        a, b = pred == c, true == c
        total = int(a.sum()) + int(b.sum())
        if total:
            out[c - 1] = 2.0 * int((a & b).sum()) / total
    return out


class SplitScores:
    """Per-class counts over the frames of a split, for the figures besides present-frame Dice.

    Per class: Dice over all pixels of the split (aggregate: 2 sum TP / (sum P + sum G)), the share
    of frames without the structure where the prediction has some of it (false-positive frames),
    the share of frames with the structure where the prediction has some of it (detection rate),
    and the mean per-frame Dice over frames where truth or prediction has it (a false positive on a
    frame without the structure scores 0; frames where both lack it are skipped).
    """

    def __init__(self, num_classes: int) -> None:
        k = num_classes - 1
        self.num_classes = num_classes
        self.tp, self.pred_px, self.true_px = np.zeros(k), np.zeros(k), np.zeros(k)
        self.present, self.detected = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.absent, self.false_pos = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.any_sum, self.any_count = np.zeros(k), np.zeros(k, np.int64)

    def update(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Add one frame's label maps; returns its per-class Dice (NaN where both lack the class)."""
        dice = label_dice(pred, true, self.num_classes)
        for c in range(1, self.num_classes):
            a, b = pred == c, true == c
            i = c - 1
            n_pred, n_true = int(a.sum()), int(b.sum())
            self.tp[i] += int((a & b).sum())
            self.pred_px[i] += n_pred
            self.true_px[i] += n_true
            if n_true:
                self.present[i] += 1
                self.detected[i] += n_pred > 0
            else:
                self.absent[i] += 1
                self.false_pos[i] += n_pred > 0
            if not np.isnan(dice[i]):
                self.any_sum[i] += dice[i]
                self.any_count[i] += 1
        return dice

    def aggregate_dice(self) -> np.ndarray:
        total = self.pred_px + self.true_px
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 2 * self.tp / total, np.nan)

    def any_frame_dice(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.any_count > 0, self.any_sum / np.maximum(self.any_count, 1), np.nan)

    def detection_rate(self) -> np.ndarray:
        return np.where(self.present > 0, self.detected / np.maximum(self.present, 1), np.nan)

    def false_positive_share(self) -> np.ndarray:
        return np.where(self.absent > 0, self.false_pos / np.maximum(self.absent, 1), np.nan)


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
