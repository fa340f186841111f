"""The configurations a budgeted run tries on val (trials.py), proposed from the fingerprint and
the plan where the plan's rules are unsure.

    candidates = propose(fingerprint, plan, device)    # plain first, then plan, dynunet, one more

- ``plain``: DESIGN.md's plain script, the ``plain`` profile (MONAI UNet 16..256, 2 residual units,
  256x256 letterboxed, min-max only, DiceCE, Adam 1e-3 at a constant rate, horizontal flips, batch
  8). Always tried, so the trials cannot end below it on val.
- ``plan``: the rules' configuration (plan.py), its width chosen by the budget.
- ``dynunet``: nnU-Net's network (MONAI DynUNet with deep supervision) at the plan's input, with
  nnU-Net's intensity augmentation (noise, blur, low resolution, gamma) where the fingerprint
  allows it: not for structures thinner than THIN_BOUNDARY_PX at input size, which a grey-level
  change can wash out (the phantom's lines lost val Dice to it).
- input scale against network width and optimiser steps, or, for thin structures, the rules'
  other choices: ``small-input`` (half the input pixels, so more steps and a wider network in the
  same time; not for structures that would fall below THIN_BOUNDARY_PX) or ``no-boundary`` (thin
  structures: no boundary loss, nnU-Net's intensity set on, the input at the device's pixel budget
  instead of raised for the thin structures: the set where the plan's rules lost to the plain script).

Pure: the candidates are configurations; timing and training are trials.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .augment import NNUNET_INTENSITY
from .config import PROFILES, TrainConfig
from .fingerprint import Fingerprint
from .plan import (
    CHANNEL_CAP,
    LADDER,
    THIN_BOUNDARY_PX,
    Device,
    Plan,
    pixel_budget_scale,
    plan_network,
    thin_lines,
    thinnest_at_input,
)

PLAIN = "plain"  # the candidate and the profile


@dataclass(frozen=True)
class Candidate:
    """A configuration to try: its name, why it is tried, and the widths a budget may choose
    among (model_overrides, narrowest first; empty: the configuration's own network)."""

    name: str
    config: TrainConfig
    why: str
    widths: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "config": self.config.to_dict(), "widths": self.widths}


def plain_config(base: TrainConfig) -> TrainConfig:
    """The ``plain`` profile (DESIGN.md's plain script) on the same val split, seed, device and
    loader as ``base``."""
    return replace(PROFILES[PLAIN], epochs=base.epochs, val_every=base.val_every, patience=base.patience,
                   patience_start=base.patience_start, seed=base.seed, num_workers=base.num_workers,
                   val_fraction=base.val_fraction, device=base.device)


def dynunet_network(first: int, unet: dict[str, Any], cap: int) -> dict[str, Any]:
    """model_overrides of a DynUNet with the depth and input size of the UNet ``unet``, ``first``
    channels doubling per level up to ``cap``, deep supervision on all decoder levels but the
    lowest (nnU-Net gives that one weight 0)."""
    depth = len(unet["strides"])
    return {"name": f"dyn-{first}", "arch": "dynunet", "channels": [min(first * 2 ** i, cap) for i in range(depth + 1)],
            "strides": [2] * depth, "num_res_units": 0, "deep_supervision": max(1, depth - 2), "norm": "instance",
            "height": unet["height"], "width": unet["width"]}


def _dynunet(plan: Plan, device: Device, lines: bool) -> Candidate:
    """DynUNet widths like the plan's UNet ladder, nnU-Net's intensity set unless ``lines`` (thin structures)."""
    base, cap = plan.config, CHANNEL_CAP[device.kind]
    firsts = sorted({first for first, _ in LADDER[device.kind]})
    widths = [dynunet_network(first, base.model_overrides, cap) for first in firsts]
    default = next((w for w in widths if w["channels"][0] == base.model_overrides["channels"][0]), widths[0])
    if lines:
        augmentation, why_aug = base.augmentation, "the plan's augmentation (no intensity changes: thin structures)"
    else:
        augmentation, why_aug = {**base.augmentation, **NNUNET_INTENSITY}, "nnU-Net's intensity augmentation"
    config = replace(base, model="dynunet", model_overrides=default, augmentation=augmentation)
    why = (f"nnU-Net's network (DynUNet, deep supervision on {default['deep_supervision']} decoder levels, "
           f"instance norm) at the plan's input {default['height']}x{default['width']}, with {why_aug}")
    return Candidate("dynunet", config, why, widths)


def _scale_or_rules(fp: Fingerprint, plan: Plan, device: Device, lines: bool) -> Candidate | None:
    """The other side of the plan's input scale (and, for thin structures, of its loss and
    augmentation rules); None when there is no other side (the input cannot shrink)."""
    base, scale = plan.config, plan.info["scale"]
    thinnest = thinnest_at_input(fp, 1.0)
    if lines:
        new_scale = min(scale, pixel_budget_scale(fp, device))
        chosen, widths, _ = plan_network(fp, device, new_scale)
        config = replace(base, model_overrides=chosen, hd_max=0.0,
                         augmentation={**base.augmentation, **NNUNET_INTENSITY})
        why = (f"the rules' other side for thin structures: no boundary loss, nnU-Net's intensity augmentation, "
               f"input {chosen['height']}x{chosen['width']} (scale {new_scale:.2f} against the plan's {scale:.2f})")
        return Candidate("no-boundary", config, why, widths)
    floor = THIN_BOUNDARY_PX / thinnest if thinnest else 0.0
    new_scale = max(scale / math.sqrt(2), floor)
    chosen, widths, _ = plan_network(fp, device, new_scale)
    planned = base.model_overrides
    if chosen["height"] * chosen["width"] >= 0.9 * planned["height"] * planned["width"]:
        return None
    config = replace(base, model_overrides=chosen)
    why = (f"input scale against width and steps: {chosen['height']}x{chosen['width']} (scale {new_scale:.2f}, "
           f"about half the plan's pixels) gets more optimiser steps and a wider network in the same time"
           + (f"; the thinnest structures keep {thinnest * new_scale:.1f} px" if thinnest else ""))
    return Candidate("small-input", config, why, widths)


def propose(fp: Fingerprint, plan: Plan, device: Device) -> list[Candidate]:
    """The candidates for ``fp``, plain first (ties go to the earlier one, trials.py)."""
    base = plan.config
    lines = thin_lines(fp, plan.info["scale"])
    candidates = [
        Candidate(PLAIN, plain_config(base), "DESIGN.md's plain script (UNet 16..256, 2 residual units, 256x256, "
                  "DiceCE, Adam 1e-3, flips, batch 8): always tried, so the choice never ends below it on val"),
        Candidate("plan", base, "the plan's rules (plan.json: reasons)", list(plan.candidates)),
        _dynunet(plan, device, lines),
    ]
    other = _scale_or_rules(fp, plan, device, lines)
    return candidates + ([other] if other is not None else [])
