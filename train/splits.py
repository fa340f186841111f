"""Train / val / test splits, multilabel-stratified on class presence (iterstrat).

The presence vector of a frame is [class 1 present, ..., class N-1 present, nothing present], so
frames without any structure are spread over the parts as evenly as the others.
"""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit


def presence_matrix(masks_classes: list[set[int]], num_classes: int) -> np.ndarray:
    rows = np.zeros((len(masks_classes), num_classes), np.int64)
    for r, present in enumerate(masks_classes):
        for c in present:
            if 0 < c < num_classes:
                rows[r, c - 1] = 1
        rows[r, -1] = int(not rows[r, :-1].any())
    return rows


def _take(indices: np.ndarray, presence: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, taken) with ``count`` taken, stratified on presence."""
    if count <= 0:
        return indices, indices[:0]
    if count >= len(indices):
        return indices[:0], indices
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=count, random_state=seed)
    rest, taken = next(splitter.split(np.zeros(len(indices)), presence[indices]))
    return indices[rest], indices[taken]


def stratified_split(ids: list[str], presence: np.ndarray, val: float = 0.1, test: float = 0.2,
                     seed: int = 42) -> dict[str, str]:
    """Assign each id to train / val / test; deterministic for a seed, the parts disjoint."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to < 1")
    n = len(ids)
    order = np.argsort(np.asarray(ids, dtype=object))
    n_test, n_val = int(round(test * n)), int(round(val * n))
    if n - n_test - n_val < 1:
        n_test, n_val = 0, 0
    rest, test_idx = _take(order, presence, n_test, seed)
    train_idx, val_idx = _take(rest, presence, n_val, seed + 1)
    out = {ids[i]: "train" for i in train_idx}
    out.update({ids[i]: "val" for i in val_idx})
    out.update({ids[i]: "test" for i in test_idx})
    return out
