"""One epoch of training and one validation pass: the work inside each epoch of the loop.

Validation is split into per-batch results and their combination so that, under torchrun, every
process can validate its share and the combined figures equal one process's over all batches.
"""

from __future__ import annotations

import numpy as np
import torch

from .distributed import Comm
from .metrics import DiceAccumulator


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when torch sees one, else CPU; an explicit 'cuda' without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train config field 'device': 'cuda' asked for, but torch {torch.__version__} "
                         "sees no CUDA device; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train_epoch(model, loader, loss_fn, optimizer, scaler, hd_weight: float, device, amp: bool,
                after_step=None) -> float:
    """One pass over ``loader``; returns the mean training loss per frame. ``after_step()`` runs
    after each optimiser step (the weight average's update)."""
    model.train()
    total, frames = 0.0, 0
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(image)
        loss, _ = loss_fn(logits, label, hd_weight, batch.get("fields"))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(image)
        frames += len(image)
    return total / max(frames, 1)


def validate(model, loader, loss_fn, hd_weight: float, num_classes: int, device, amp: bool,
             comm: Comm | None = None) -> tuple[float, np.ndarray]:
    """(mean loss per frame, per-class Dice (C-1,)) on argmax label maps at model size.

    With an active ``comm``, ``loader`` holds this rank's share of whole val batches
    (make_val_loader); every rank's per-batch results are gathered and combined in frame order,
    so the figures equal those of one process over all the batches: no frame counted twice, and
    the same sums in the same order.
    """
    batches = validate_batches(model, loader, loss_fn, hd_weight, num_classes, device, amp)
    if comm is not None and comm.active:
        batches = [b for rank_batches in comm.gather(batches) for b in rank_batches]
    return combine_validation(batches, num_classes)


@torch.no_grad()
def validate_batches(model, loader, loss_fn, hd_weight: float, num_classes: int, device,
                     amp: bool) -> list[tuple[int, float, int, np.ndarray]]:
    """Per batch of ``loader``: (first frame index, loss x frames, frames, per-frame Dice Bx(C-1))."""
    model.eval()
    dice = DiceAccumulator(num_classes)
    batches = []
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(image)
        loss, _ = loss_fn(logits, label, hd_weight)
        scores = dice.update(logits.argmax(1), label[:, 0])
        batches.append((int(batch["index"][0]), float(loss) * len(image), len(image), scores))
    return batches


def combine_validation(batches: list[tuple[int, float, int, np.ndarray]], num_classes: int) -> tuple[float, np.ndarray]:
    """Per-batch validation results (in any order) -> (mean loss per frame, per-class Dice)."""
    dice = DiceAccumulator(num_classes)
    total, frames = 0.0, 0
    for _, loss_sum, count, scores in sorted(batches, key=lambda b: b[0]):
        total += loss_sum
        frames += count
        dice.extend(scores)
    return total / max(frames, 1), dice.result()
