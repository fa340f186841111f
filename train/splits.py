"""Train / val / test splits, multilabel-stratified on class presence (iterstrat), or with groups
(patients, sweeps) kept on one side (scikit-learn's StratifiedGroupKFold).

The presence vector of a frame is [class 1 present, ..., class N-1 present, nothing present], so
frames without any structure are spread over the parts as evenly as the others.
"""

from __future__ import annotations

import itertools
import warnings

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


MAX_GROUP_FOLDS = 20  # the split's step with groups: 1/20 of the groups (fewer groups: one group)


def _pattern_labels(presence: np.ndarray) -> np.ndarray:
    """One label per frame for a single-label stratifier: its class-presence pattern."""
    _, labels = np.unique(presence, axis=0, return_inverse=True)
    return labels.ravel()


def grouped_split(ids: list[str], presence: np.ndarray, groups: list[str], val: float = 0.1, test: float = 0.2,
                  seed: int = 42) -> dict[str, str]:
    """Assign each id to train / val / test with every group (a patient, a sweep) on one side.

    The groups are dealt into k = min(20, groups) folds by scikit-learn's StratifiedGroupKFold,
    stratified on each frame's class-presence pattern as far as whole groups allow (by GroupKFold,
    unstratified, where no pattern has as many frames as there are folds); test takes the
    round(test * k) folds (at least one when asked for) whose frames come closest to the test
    fraction, val likewise from the others, train the rest. Deterministic for a seed and the same
    ids, whatever their order.

    Raises:
        ValueError: too few groups to give each asked-for part a group and keep one for training.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val {val} and --test {test} must be fractions in [0, 1) that sum to < 1")
    order = np.argsort(np.asarray(ids, dtype=object))
    ids = [ids[i] for i in order]
    presence, groups = presence[order], [groups[i] for i in order]
    k = min(MAX_GROUP_FOLDS, len(set(groups)))
    n_test = max(int(round(test * k)), int(test > 0))
    n_val = max(int(round(val * k)), int(val > 0))
    if n_test + n_val >= k:
        raise ValueError(f"{len(set(groups))} groups cannot give val and test a group each and keep one for training; "
                         f"give more groups, or --val 0 / --test 0")
    fold = np.zeros(len(ids), np.int64)
    if n_test + n_val:
        labels = _pattern_labels(presence)
        if np.bincount(labels).max() >= k:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        else:  # no pattern has a frame per fold: StratifiedGroupKFold refuses, and there is nothing to stratify
            splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits": expected
            warnings.simplefilter("ignore", UserWarning)
            for f, (_, held) in enumerate(splitter.split(np.zeros(len(ids)), labels, groups)):
                fold[held] = f
    sizes = np.bincount(fold, minlength=k)
    test_folds = _closest_folds(sizes, range(k), n_test, test * len(ids))
    val_folds = _closest_folds(sizes, [f for f in range(k) if f not in test_folds], n_val, val * len(ids))
    parts = np.where(np.isin(fold, test_folds), 2, np.where(np.isin(fold, val_folds), 1, 0))
    return {item_id: ("train", "val", "test")[p] for item_id, p in zip(ids, parts)}


def _closest_folds(sizes: np.ndarray, folds, count: int, target: float) -> list[int]:
    """The ``count`` folds whose frames add up closest to ``target`` (groups make folds unequal)."""
    best = min(itertools.combinations(folds, count), key=lambda c: abs(sizes[list(c)].sum() - target))
    return list(best)
