"""The seed's loss: DiceCE, with MONAI's Hausdorff distance-transform loss blended in over time.

    loss = (1 - hw) * DiceCE + hw * c * HausdorffDT,   hw = hausdorff_weight(epoch, epochs)
    c = min(1, cap * DiceCE / HausdorffDT)             (both values detached: c is a constant)

The boundary term is off by default (``hd_max`` 0). On real frames it made training collapse
(docs/real-data.md): HausdorffDT grows with the squared distance to the boundary, so on large,
irregular structures it can be many times the DiceCE term and swamp it. ``c`` caps the boundary
term at ``cap`` times the DiceCE term, whatever the structures' size; the training loop also
switches the term off when validation Dice falls (loop.py, ``hd_guard``).

``HausdorffDT`` computes exactly what ``monai.losses.HausdorffDTLoss(include_background=False,
to_onehot_y=True, softmax=True)`` computes (alpha 2, mean over pixels, batch and classes), but
faster on a CPU: distance transforms come from OpenCV's exact Euclidean transform instead of
SciPy's, the target's fields can be computed ahead (in the data loader's workers), and nothing
is computed while the weight is 0.

Deep supervision (a DynUNet in training mode, model.py) gives logits BxKxCxHxW: the main output
and K-1 lower-resolution heads at input size. The DiceCE term is then nnU-Net's weighted sum over
the heads (``deep_supervision_weights``); the boundary term, when on, is taken on the main output
only (its distance transforms are the costly part on a CPU).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from monai.losses import DiceCELoss


def hausdorff_weight(epoch: int, epochs: int, start: float = 0.2, end: float = 0.6,
                     max_weight: float = 0.2) -> float:
    """HD weight at 0-based ``epoch``: 0 before ``start * epochs``, linear up to ``max_weight`` at
    ``end * epochs``, constant after. The seed (500 epochs): 0.2 * min((epoch - 100) / 200, 1)."""
    first, last = start * epochs, end * epochs
    if epoch < first or max_weight == 0:
        return 0.0
    if last <= first:
        return float(max_weight)
    return float(max_weight * min((epoch - first) / (last - first), 1.0))


def distance_field(masks: np.ndarray) -> np.ndarray:
    """MONAI's HD distance field of binary masks NxHxW: distance to the boundary from both sides
    (foreground EDT + background EDT), all zeros for an empty or full mask."""
    masks = np.ascontiguousarray(masks, dtype=bool)
    out = np.zeros(masks.shape, np.float32)
    for i, fg in enumerate(masks):
        if fg.any() and not fg.all():
            fg8 = fg.view(np.uint8)
            out[i] = _edt(fg8) + _edt(1 - fg8)  # disjoint supports: the sum adds no rounding
    return out


def _edt(binary: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each non-zero pixel to the nearest zero pixel (float64).

    OpenCV's precise transform can differ in the last bit from one call to the next; the true
    value is the square root of an integer, so it is snapped to that: deterministic, and equal
    to SciPy's distance_transform_edt (what MONAI uses) after rounding to float32.
    """
    d = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.rint(np.square(d, dtype=np.float64)))


def target_fields(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Distance fields of one label map HxW for classes 1..C-1 -> float32 (C-1)xHxW."""
    classes = np.arange(1, num_classes, dtype=labels.dtype)[:, None, None]
    return distance_field(labels[None] == classes)


class HausdorffDT(torch.nn.Module):
    """MONAI's HausdorffDTLoss (include_background=False, one-hot target, softmax, alpha 2).

    forward(logits BxCxHxW, labels Bx1xHxW integer, fields Bx(C-1)xHxW or None) -> scalar.
    ``fields`` are ``target_fields`` of the labels; given, they save half the transforms.
    """

    alpha = 2.0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                fields: torch.Tensor | None = None) -> torch.Tensor:
        num_classes = logits.shape[1]
        probs = torch.softmax(logits.float(), dim=1)[:, 1:]
        classes = torch.arange(1, num_classes, device=labels.device).view(1, -1, 1, 1)
        target = (labels == classes).float()
        if fields is None:
            lab = labels[:, 0].cpu().numpy()
            fields = torch.from_numpy(np.stack([target_fields(x, num_classes) for x in lab]))
        b, c, h, w = probs.shape
        pred_masks = (probs.detach() > 0.5).cpu().numpy().reshape(b * c, h, w)
        pred_fields = torch.from_numpy(distance_field(pred_masks).reshape(b, c, h, w))
        distance = pred_fields.to(probs.device) ** self.alpha + fields.to(probs.device).float() ** self.alpha
        return ((probs - target) ** 2 * distance).mean()


def deep_supervision_weights(heads: int) -> list[float]:
    """nnU-Net's weights for the main output and ``heads - 1`` deeper heads: 1/2^i, normalised to
    sum to 1 (nnU-Net also gives its lowest-resolution output weight 0; model.py leaves that head
    out of the network instead)."""
    raw = [0.5 ** i for i in range(heads)]
    return [w / sum(raw) for w in raw]


def hd_scale(dicece: float, hd: float, cap: float) -> float:
    """The factor that caps the boundary term at ``cap`` x the DiceCE term (1 when already below)."""
    if not hd > 0 or not math.isfinite(hd):
        return 1.0 if hd == 0 else 0.0
    return min(1.0, cap * dicece / hd)


class SegLoss(torch.nn.Module):
    """(1 - hw) * DiceCE + hw * c * HausdorffDT with c = hd_scale(...); the HD term is skipped
    entirely while hw is 0.

    forward(logits BxCxHxW or BxKxCxHxW (deep supervision), labels Bx1xHxW, hd_weight, fields=None)
    -> (loss, {"dicece", "hd", "hd_scale"}).
    """

    def __init__(self, hd_cap: float = 0.5) -> None:
        super().__init__()
        self.hd_cap = hd_cap
        self.dicece = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
                                 lambda_dice=0.5, lambda_ce=0.5)
        self.hd = HausdorffDT()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, hd_weight: float,
                fields: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        logits = logits.float()
        if logits.ndim == 5:  # deep supervision: main output first
            weights = deep_supervision_weights(logits.shape[1])
            dicece = sum(w * self.dicece(logits[:, i], labels) for i, w in enumerate(weights))
            logits = logits[:, 0]
        else:
            dicece = self.dicece(logits, labels)
        if hd_weight <= 0:
            return dicece, {"dicece": float(dicece.detach()), "hd": float("nan"), "hd_scale": float("nan")}
        hd = self.hd(logits, labels, fields)
        scale = hd_scale(float(dicece.detach()), float(hd.detach()), self.hd_cap)
        loss = (1.0 - hd_weight) * dicece + (hd_weight * scale) * hd
        return loss, {"dicece": float(dicece.detach()), "hd": float(hd.detach()), "hd_scale": scale}
