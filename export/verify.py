"""Parity of an exported model: ONNX Runtime (CPU) against the PyTorch checkpoint, and a lower
precision against fp32, on real-looking frames run through the contract's preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usseg.runtime.sessions import cpu_session
from usseg.runtime.contract import Contract

from .errors import VerificationError


@dataclass(frozen=True)
class Parity:
    max_abs_delta: float | None  # None when the outputs are labels
    label_agreement: float       # share of pixels with the same label as the reference
    dice_vs_reference: float | None  # mean foreground Dice against the reference labels; None: neither has any
    reference: str               # "pytorch" or "fp32"


def labels_of(output: np.ndarray, kind: str) -> np.ndarray:
    """[N, C, H, W] logits/probs -> [N, H, W] labels; labels pass through."""
    if kind == "labels":
        return output.reshape(output.shape[0], output.shape[-2], output.shape[-1]).astype(np.uint8)
    return output.argmax(axis=1).astype(np.uint8)


def label_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> float | None:
    """Mean Dice over the foreground classes present in either map; None (undefined) when neither
    map has any foreground: two empty maps agree, but say nothing about the model."""
    scores = []
    for c in range(1, num_classes):
        a, b = pred == c, ref == c
        total = int(a.sum()) + int(b.sum())
        if total:
            scores.append(2.0 * int((a & b).sum()) / total)
    return float(np.mean(scores)) if scores else None


def compare(output: np.ndarray, reference: np.ndarray, kind: str, num_classes: int, reference_name: str) -> Parity:
    ours, theirs = labels_of(output, kind), labels_of(reference, kind)
    delta = None if kind == "labels" else float(np.abs(output.astype(np.float64) - reference).max())
    return Parity(delta, float((ours == theirs).mean()), label_dice(ours, theirs, num_classes), reference_name)


def run_onnx(path: str, batch: np.ndarray, contract: Contract) -> np.ndarray:
    """Run the model on the CPU provider, frame by frame when its batch size is fixed."""
    session = cpu_session(Path(path))
    name = session.get_inputs()[0].name
    step = contract.input.batch or len(batch)
    outs = [session.run(None, {name: batch[i:i + step]})[0] for i in range(0, len(batch), step)]
    return np.concatenate(outs, axis=0)


def check(parity: Parity, precision_name: str, min_label_agreement: float | None, min_dice: float | None) -> None:
    """Raise VerificationError with the figures when past tolerance."""
    if min_label_agreement is not None and parity.label_agreement < min_label_agreement:
        raise VerificationError(
            f"{precision_name}: labels agree with {parity.reference} on {100 * parity.label_agreement:.4f} % of "
            f"pixels, need >= {100 * min_label_agreement:.2f} % (max |delta| {parity.max_abs_delta})")
    if min_dice is not None and parity.dice_vs_reference is None:
        raise VerificationError(
            f"{precision_name}: neither it nor {parity.reference} finds any structure on the verification frames, "
            f"so their Dice is undefined; verify with frames that show the structures (--frames)")
    if min_dice is not None and parity.dice_vs_reference < min_dice:
        raise VerificationError(
            f"{precision_name}: Dice of its labels against {parity.reference} is {parity.dice_vs_reference:.4f}, "
            f"need >= {min_dice}")
