"""A Trainer fitted to a wall-clock budget: before the first epoch, and again before each one.

The sizing rules are pure and live in budget.py; this module applies them to a Trainer: it times
real training steps of each candidate network on this machine, rebuilds the trainer with the
chosen network and run size, and during the run resizes the epochs when the machine turns out
slower or faster than timed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from .budget import (
    FEW_STEPS,
    GROWTH,
    MIN_STEPS,
    PATIENCE_START,
    TARGET_VALIDATIONS,
    Timing,
    choose_network,
    size_run,
    time_steps,
)
from .io import write_json
from .model import build_model, describe_model

if TYPE_CHECKING:
    from .loop import Trainer

log = logging.getLogger("usseg.train.loop")

# A run that is faster than timed grows only by at least this share of its epochs (and one epoch),
# so that a clock that wavers around the deadline does not resize the run every epoch.
MIN_GROWTH = 0.02


def _timer(trainer: Trainer):
    """A function timing real training steps of the trainer's configuration with other model_overrides."""
    cfg = trainer.cfg

    def timer(overrides: dict[str, Any]) -> Timing:
        mcfg = replace(cfg, model_overrides=overrides).model_config()
        timing = time_steps(build_model(mcfg, len(trainer.classes)), trainer.train_set, trainer.val_set,
                            trainer.loss_fn, cfg.batch_size, cfg.lr, trainer.device)
        log.info("timed %s: %.3f s per training step of %d frames (%d threads)", describe_model(mcfg), timing.step_s,
                 cfg.batch_size, torch.get_num_threads())
        return timing

    return timer


def choose_threads(trainer: Trainer, overrides: dict[str, Any]) -> tuple[str | None, Timing | None]:
    """On a CPU with several PyTorch threads, keep one instead when a step of ``overrides`` trains
    faster with one (it does on a busy machine); returns (the reason, the timing of the threads
    kept), or (None, None) where there is nothing to choose."""
    threads = torch.get_num_threads()
    if trainer.device.type != "cpu" or threads == 1:
        return None, None
    timer = _timer(trainer)
    many = timer(overrides)
    torch.set_num_threads(1)
    one = timer(overrides)
    if many.step_s < one.step_s:
        torch.set_num_threads(threads)
    kept_timing, other = (many, one) if many.step_s < one.step_s else (one, many)
    kept = torch.get_num_threads()
    return (f"{kept} PyTorch thread{'s' if kept > 1 else ''}: {kept_timing.step_s:.3f} s per step "
            f"against {other.step_s:.3f} s with {threads if kept == 1 else 1}"), kept_timing


def fit_to_budget(trainer: Trainer, seconds: float, candidates: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Fit the network (widest of ``candidates`` that fits, narrowest first; model_overrides
    dicts) and the epochs, validation interval and patience to ``seconds``; returns the reasons.
    On a CPU, one thread is kept instead of several when it trains faster (it does on a busy
    machine)."""
    options = candidates or [trainer.cfg.model_overrides]
    why_threads, first = choose_threads(trainer, options[0])
    reasons, _ = fit_network(trainer, seconds, options, timed={0: first} if first else None)
    return {"threads": why_threads, **reasons} if why_threads else reasons


def fit_network(trainer: Trainer, seconds: float, options: list[dict[str, Any]], *,
                track_seconds: float | None = None, validations: int = TARGET_VALIDATIONS, early_stop: bool = True,
                timed: dict[int, Timing] | None = None) -> tuple[dict[str, str], Timing]:
    """Rebuild ``trainer`` with the widest of ``options`` (model_overrides, narrowest first) that
    gets MIN_STEPS optimiser steps in ``track_seconds`` (default ``seconds``), and with epochs,
    validation interval (about ``validations``) and patience (none unless ``early_stop``) that fill
    ``seconds``. ``timed``: timings already made, by option index. Returns (reasons, the chosen
    network's timing)."""
    cfg, reasons = trainer.cfg, {}
    track = seconds if track_seconds is None else track_seconds
    steps_per_epoch = math.ceil(len(trainer.train_set) / cfg.batch_size)
    val_batches = math.ceil(len(trainer.val_set) / cfg.batch_size)
    timer, timed = _timer(trainer), timed or {}
    index, timings = choose_network(range(len(options)), lambda i: timed.get(i) or timer(options[i]), track,
                                    steps_per_epoch, MIN_STEPS)
    timing = timings[index]
    size = size_run(seconds, timing, steps_per_epoch, val_batches, validations)
    track_steps = int(track / timing.step_s)
    if early_stop and size.steps < FEW_STEPS:
        log.warning("the budget gives %d optimiser steps (%s s each); with fewer than %d the phantom did not "
                    "train well (docs/ablation.md)", size.steps, f"{timing.step_s:.3f}", FEW_STEPS)
    patience = size.patience if early_stop else 0
    trainer.cfg = replace(cfg, model_overrides=options[index], epochs=size.epochs, val_every=size.val_every,
                          patience=patience, patience_start=PATIENCE_START if early_stop else 0.0)
    if len(options) > 1:
        where = "the budget" if track_seconds is None else f"the {track / 60:.1f} min it would train if it won"
        which = (f"the widest of {len(options)} candidates timed on this machine that reaches {MIN_STEPS} "
                 if track_steps >= MIN_STEPS else
                 f"the narrowest of {len(options)} candidates: none reaches {MIN_STEPS} ")
        reasons["model_overrides"] = (f"{describe_model(trainer.cfg.model_config())}: {which}optimiser steps in "
                                      f"{where} ({track_steps} at {timing.step_s:.3f} s each)")
    reasons["epochs"] = (f"{size.epochs} epochs of {steps_per_epoch} steps at {timing.step_s:.3f} s per "
                         f"step fill {seconds / 60:.1f} min with validation (estimate {size.seconds / 60:.1f} min)")
    reasons["val_every"] = f"every {size.val_every} epochs: about {validations} validations in the run"
    reasons["patience"] = (f"stop after {size.patience} validations without a better mean val Dice (30 %), "
                           f"not before {PATIENCE_START:.0%} of the epochs" if early_stop else
                           "no early stop: the run is a trial, judged at its end")
    trainer.rebuild()
    return reasons, timing


def fit_to_deadline(trainer: Trainer, epoch: int) -> None:
    """Before ``epoch``: shorten the run when the epochs left no longer fit before the budget's
    deadline; when the machine is faster than timed, give epochs back, and in the first half of
    the run add up to half as many again (later the learning rate is too far down its curve for
    that)."""
    clock, cfg = trainer.clock, trainer.cfg
    if math.isinf(clock.deadline) or clock.seconds_per_epoch(epoch) is None:
        return  # no budget, or nothing measured yet
    fitted = clock.max_epochs or cfg.epochs
    ceiling = int(fitted * GROWTH) if epoch < cfg.epochs // 2 else max(fitted, cfg.epochs)
    fits = clock.fit_epochs(epoch, ceiling)
    if fits == cfg.epochs or cfg.epochs < fits < cfg.epochs + max(1, round(MIN_GROWTH * cfg.epochs)):
        return
    if fits < cfg.epochs:
        first = not any("resized" in h for h in trainer.history)
        (log.warning if first else log.info)(
            "the machine is slower than timed (%.1f s per epoch): %d epochs instead of %d, to end within the "
            "budget", clock.seconds_per_epoch(epoch), fits, cfg.epochs)
    else:
        log.info("the machine is faster than timed (%.1f s per epoch): %d epochs instead of %d",
                 clock.seconds_per_epoch(epoch), fits, cfg.epochs)
    if trainer.history:
        trainer.history[-1]["resized"] = fits
    trainer.set_epochs(fits)
    if trainer.comm.is_main:
        write_json(trainer.out / "config.json", trainer.cfg.to_dict())
