"""Learning-rate schedules as closed forms of (epoch, epochs).

A closed form needs no state of its own, so a resumed run, a run whose epochs change on
``--resume`` and a budgeted run that is shortened while it trains (budget.py) all follow the same
curve: the rate of an epoch depends only on where that epoch lies in the run as now planned.
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("none", "cosine", "poly")
POLY_POWER = 0.9


def lr_factor(name: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base rate at 0-based ``epoch`` of ``epochs``: 1 for none, cosine annealing
    to 0 at ``epochs``, or polynomial decay (1 - epoch / epochs) ** 0.9."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {list(SCHEDULES)}")
    if name == "none":
        return 1.0
    t = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** POLY_POWER


class EpochSchedule:
    """Sets the optimiser's rate for an epoch; ``epochs`` may change between epochs."""

    def __init__(self, name: str, optimizer: Any, base_lr: float, epochs: int) -> None:
        lr_factor(name, 0, epochs)  # names a bad schedule
        self.name, self.optimizer, self.base_lr, self.epochs = name, optimizer, base_lr, epochs

    def apply(self, epoch: int) -> float:
        lr = self.base_lr * lr_factor(self.name, epoch, self.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_lr": self.base_lr, "epochs": self.epochs}
