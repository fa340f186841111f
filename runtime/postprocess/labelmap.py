"""The spine label map: class values, mask plane order, the result type and the input check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_MID, LABEL_VTB, LABEL_EPI = 1, 2, 3
MID, VTB, EPI = 0, 1, 2  # plane index in SpineGeometry.masks


@dataclass(frozen=True, eq=False)  # arrays have no single truth value, so no __eq__
class SpineGeometry:
    """What post-processing found in one label map.

    masks: uint8 [3, H, W] of 0/1 (MID, VTB, EPI after gap fixing; all zero when no MID line).
    mid, epi: float64 (2, 2) [[x1, y1], [x2, y2]] or None. vtb: float64 (4, 2) corners or None.
    """

    masks: np.ndarray
    mid: np.ndarray | None
    vtb: np.ndarray | None
    epi: np.ndarray | None


def validate_labels(labels: object, what: str = "labels") -> np.ndarray:
    """The label map as a C-contiguous uint8 HxW array, or ValueError naming what is wrong."""
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got dtype {labels.dtype}")
    if labels.shape[0] < 1 or labels.shape[1] < 1:
        raise ValueError(f"{what} shape {labels.shape} is empty")
    return np.ascontiguousarray(labels)
