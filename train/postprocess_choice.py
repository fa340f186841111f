"""The label-map clean-up chosen on val (nnU-Net's rule), at the end of ``usseg train``.

The best checkpoint predicts every val frame once; then, class by class in index order and in
the order the runtime runs them (runtime/cleanup.py: largest region, then fill holes), each step
is tried on the val predictions with the steps kept so far. A step is kept where it changes the
val predictions and the class's val Dice does not fall (a step that changes nothing has shown
nothing, and would only cost time per frame). Dice is the figure ``usseg evaluate`` reports:
per frame at the frame's own size, averaged over the frames where the class is present.

A step only turns the class's own pixels into background, or background into the class, so it
moves no other class's Dice: deciding class by class is deciding jointly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usseg.runtime.cleanup import STEPS, apply_steps, content_of, describe
from usseg.runtime.contract import Contract
from usseg.runtime.preprocess import Letterbox, preprocess

from .checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint, save_checkpoint
from .maskfolder import MaskFolder
from .metrics import json_number, label_dice

log = logging.getLogger(__name__)


@dataclass
class ValFrame:
    """One val frame's prediction at model size, its letterbox and its ground truth at frame size."""

    labels: np.ndarray
    box: Letterbox
    truth: np.ndarray


def class_dice(frames: list[ValFrame], index: int) -> float:
    """Mean Dice of class ``index`` at frame size over the frames whose truth has it (NaN: none)."""
    scores = [label_dice(f.box.invert_labels(f.labels) == index, f.truth == index, 2)[0]
              for f in frames if (f.truth == index).any()]
    return float(np.mean(scores)) if scores else float("nan")


def choose(frames: list[ValFrame], classes: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """({step: [class names kept]}, {class: {step: {dice_before, dice_after, kept}}}); ``frames``
    end with the kept steps applied."""
    kept: dict[str, list[str]] = {step: [] for step in STEPS}
    report: dict[str, Any] = {}
    for index, name in enumerate(classes[1:], start=1):
        report[name] = {}
        for step in STEPS:
            before = class_dice(frames, index)
            tried = [apply_steps(f.labels, ((index, step),), content_of(f.box)) for f in frames]
            changed = any(not np.array_equal(t, f.labels) for t, f in zip(tried, frames))
            after = class_dice([replace(f, labels=t) for f, t in zip(frames, tried)], index) if changed else before
            keep = changed and not np.isnan(before) and after >= before
            if keep:
                kept[step].append(name)
                for f, t in zip(frames, tried):
                    f.labels = t
            report[name][step] = {"dice_before": json_number(before), "dice_after": json_number(after),
                                  "changed": changed, "kept": keep}
    return kept, report


@torch.no_grad()
def predict_val(model: torch.nn.Module, contract: Contract, folder: MaskFolder, ids: list[str],
                device: str | torch.device = "cpu") -> list[ValFrame]:
    """The model's label maps at model size for ``ids``, with their letterboxes and truths."""
    model = model.to(device).eval()
    spec, frames = contract.input, []
    for item_id in ids:
        image, truth = folder.load(item_id)
        x, box = preprocess(image, contract.recipe, spec.height, spec.width)
        logits = model(torch.from_numpy(x)[None, None].to(device))
        frames.append(ValFrame(logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), box, truth))
    return frames


def choose_for_run(out: Path, folder: MaskFolder, val_ids: list[str],
                   device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Choose on ``out``/best.pt's val predictions and record the choice in its contract; the
    report (what ``metrics.json`` keeps under ``postprocess``), or None without best.pt or val."""
    path = out / "best.pt"
    if not path.is_file() or not val_ids:
        return None
    state = load_checkpoint(path)
    contract = checkpoint_contract(state, path)
    frames = predict_val(model_from_checkpoint(state, path), contract, folder, val_ids, device)
    kept, report = choose(frames, tuple(contract.classes))
    contract = replace(contract, postprocess=replace(contract.postprocess, **kept))
    save_checkpoint(path, {**state, "contract": contract.to_dict()})
    log.info("post-processing chosen on val (%d frames): %s", len(frames), describe(kept))
    return {"frames": len(frames), **kept, "classes": report}

