"""Fitting a training run to a wall-clock budget on this machine.

Before the run, a few real training steps (real frames, real augmentation, forward, backward,
optimiser step) are timed for each candidate network, narrowest first; the widest one that still
gets ``MIN_STEPS`` optimiser steps inside the budget is kept, and the epochs, the validation
interval and the early-stopping patience are sized from its timing. During the run, ``Clock``
shortens the run when the machine turns out slower than timed (other jobs on it), so that it
ends within about one epoch of the deadline, and gives epochs back when it is faster than
timed (in the first half of the run up to 1.5 times the fitted epochs).

The sizing is pure (``size_run``, ``choose_network``) and takes the timer as an argument, so it
is tested with a fake one.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# At least this many optimiser steps for a wider network to be chosen: the wide network on
# usgra-seg was still gaining at 2,500 steps and peaked near 3,700 (docs/real-data.md); the
# phantom trained well in 1,300 steps, not in 325 (docs/ablation.md).
MIN_STEPS = 3000
FEW_STEPS = 1000               # below this a warning: the phantom failed at 325 steps, trained at 1,300
TARGET_VALIDATIONS = 20        # validations over a run: enough to pick a checkpoint and stop early
PATIENCE_SHARE = 0.3           # early stop after this share of the validations without gain...
# ...but not in the first 60 % of the epochs: under a cosine schedule the low-rate end is where the
# runs here still gained (a 20-minute usgra-seg run peaked at its last epoch; one stopped at 70 %
# of its epochs had its best at half-way, 0.635, with the rate still high)
PATIENCE_START = 0.6
RESERVE = 0.03                 # of the budget, kept for checkpoint writes and the final summary
GROWTH = 1.5                   # a run faster than timed may grow to this many times its fitted epochs
MAX_EPOCHS = 5000


def parse_duration(text: str) -> float:
    """'40m', '1h30m', '90s', '2h', '45' (minutes) -> seconds; ValueError naming the text otherwise."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value) * 60
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", value)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*[hms]", "", value).strip():
            raise ValueError(f"--budget {text!r}: expected a duration such as 30m, 1h30m, 90s or 45 (minutes)")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError(f"--budget {text!r}: must be longer than 0")
    return seconds


@dataclass(frozen=True)
class Timing:
    """Measured seconds per training step (one batch) and per validation batch."""

    step_s: float
    val_batch_s: float


@dataclass(frozen=True)
class RunSize:
    epochs: int
    val_every: int
    patience: int
    seconds: float          # the estimated wall time of the sized run
    steps: int


def size_run(seconds: float, timing: Timing, steps_per_epoch: int, val_batches: int,
             target_validations: int = TARGET_VALIDATIONS) -> RunSize:
    """Epochs, validation interval and patience so that training plus validation fits ``seconds``."""
    epoch_s = max(steps_per_epoch, 1) * timing.step_s
    val_s = max(val_batches, 1) * timing.val_batch_s
    epochs = max(1, int(seconds / (epoch_s + val_s)))
    val_every = 1
    for _ in range(3):  # the interval depends on the epochs and the epochs on the interval's cost
        val_every = max(1, round(epochs / target_validations))
        epochs = max(1, min(MAX_EPOCHS, int(seconds / (epoch_s + val_s / val_every))))
    validations = max(1, math.ceil(epochs / val_every))
    patience = max(3, math.ceil(PATIENCE_SHARE * validations))
    estimate = epochs * epoch_s + validations * val_s
    return RunSize(epochs, val_every, patience, round(estimate, 1), epochs * steps_per_epoch)


def choose_network(candidates: Sequence[Any], timer: Callable[[Any], Timing], seconds: float,
                   steps_per_epoch: int, min_steps: int = MIN_STEPS) -> tuple[int, list[Timing]]:
    """Index of the widest candidate (the list goes narrowest first) that gets ``min_steps``
    steps in ``seconds``, and the timings made; the narrowest when none does. Timing stops at
    the first candidate that does not fit (wider ones are slower still)."""
    if not candidates:
        raise ValueError("no candidate network to time")
    chosen, timings = 0, []
    for i, candidate in enumerate(candidates):
        timing = timer(candidate)
        timings.append(timing)
        if seconds / timing.step_s < min_steps:
            break
        chosen = i
    return chosen, timings


def time_steps(model: Any, train_set: Any, val_set: Any, loss_fn: Any, batch_size: int, lr: float,
               device: Any, steps: int = 3, warmup: int = 1) -> Timing:
    """Seconds per real training step and per validation batch of ``model``.

    The batches come from the run's own loader (augmentation included); the model and its
    optimiser are thrown away after, and torch's random state is put back, so the run that
    follows is the one it would have been without the timing.
    """
    import torch

    from .dataset import make_loader, make_val_loader

    rng = torch.get_rng_state()
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_set.set_epoch(0, fields=False)
    loader = iter(make_loader(train_set, batch_size, True, 0, 0, 0))
    durations = []
    try:
        for i in range(warmup + steps):
            start = time.perf_counter()
            try:
                batch = next(loader)
            except StopIteration:
                loader = iter(make_loader(train_set, batch_size, True, 0, i, 0))
                batch = next(loader)
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(image), label, 0.0)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            durations.append(time.perf_counter() - start)
        model.eval()
        val_durations = []
        with torch.no_grad():
            for i, batch in enumerate(make_val_loader(val_set, batch_size)):
                start = time.perf_counter()
                model(batch["image"].to(device)).argmax(1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                val_durations.append(time.perf_counter() - start)
                if i >= 1:
                    break
    finally:
        torch.set_rng_state(rng)
    timed = durations[warmup:] or durations
    # validation also computes the loss and the Dice per frame: count it as 1.5 forward passes
    val_s = 1.5 * (min(val_durations) if val_durations else timed[0] / 3)
    return Timing(step_s=float(sorted(timed)[len(timed) // 2]), val_batch_s=float(val_s))


class Clock:
    """The deadline of a budgeted run and the epochs that still fit before it; ``max_epochs``:
    the epochs the budget fitted."""

    def __init__(self, deadline: float, now: Callable[[], float] = time.monotonic, max_epochs: int | None = None) -> None:
        self.deadline, self.now, self.max_epochs = deadline, now, max_epochs
        self.started: float | None = None
        self.first_epoch = 0

    def start(self, first_epoch: int) -> None:
        self.started, self.first_epoch = self.now(), first_epoch

    def seconds_per_epoch(self, epoch: int) -> float | None:
        """Mean wall time per epoch (validations included) of this session so far."""
        done = epoch - self.first_epoch
        if self.started is None or done <= 0:
            return None
        return (self.now() - self.started) / done

    def fit_epochs(self, epoch: int, planned: int) -> int:
        """Before ``epoch`` (0-based) of a run planned to ``planned`` epochs: the epochs to plan now.

        Never more than planned; at least ``epoch + 1``, so that the run ends with a validated epoch.
        """
        per_epoch = self.seconds_per_epoch(epoch)
        if per_epoch is None or per_epoch <= 0 or math.isinf(self.deadline):
            return planned
        left = self.deadline - self.now()
        fits = epoch + int(max(left, 0.0) / per_epoch)
        return max(epoch + 1, min(planned, fits))

    def end_estimate(self, epoch: int, planned: int) -> float | None:
        """Estimated monotonic time at which the run ends, after epoch ``epoch`` finished."""
        per_epoch = self.seconds_per_epoch(epoch + 1)
        return None if per_epoch is None else self.now() + per_epoch * (planned - epoch - 1)
