"""An exponential moving average of the weights, the copy that is validated, saved and exported.

On small data sets the weights after any one step are noisy, and validation picks the best of
them on a handful of frames; an average over the last few hundred steps is a smoother model to
pick from. torch's ``AveragedModel`` keeps the copy (batch-norm statistics included); the
decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so that the copy follows
the fast early training instead of holding on to the random start.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def warmup_decay(decay: float, updates: int) -> float:
    """The decay used at the ``updates``-th update (0-based): ramps up to ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """``update(model)`` after each optimiser step; ``module`` is the averaged copy."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"weight average decay {decay!r} must be in (0, 1)")
        self.decay = decay

        @torch.no_grad()
        def blend(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
            # n counts the updates so far; the first update only copies (AveragedModel)
            weight = 1 - warmup_decay(decay, int(n) - 1)
            if torch.is_floating_point(averaged[0]):
                torch._foreach_lerp_(averaged, current, weight)
            else:  # integer buffers (batch norm's batch counter): the model's own value
                for a, c in zip(averaged, current, strict=True):
                    a.copy_(c)

        self.averaged = AveragedModel(model, multi_avg_fn=blend, use_buffers=True)

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)

    def load(self, state_dict: dict[str, torch.Tensor], updates: int) -> None:
        """Continue from saved averaged weights after ``updates`` updates."""
        self.module.load_state_dict(state_dict)
        self.averaged.n_averaged.fill_(updates)
