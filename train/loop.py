"""The training loop: epochs of augmented batches, validation every k epochs, checkpoints, logs.

    RUN/config.json    the TrainConfig used (loads back with --config)
    RUN/last.pt        the latest epoch, for --resume
    RUN/best.pt        the best mean validation Dice so far; at the end its contract gets the
                       label-map clean-up chosen on its val predictions (postprocess_choice.py)
    RUN/metrics.json   every validation, the best one and a final summary
    RUN/tb/            TensorBoard scalars: train/loss, val/loss, val/<class>, val/mean_dice

Epochs are counted from 0 in files (checkpoint "epoch", history) and from 1 in messages.

With a time budget (budget.py, budget_fit.py) the network and the epochs are fitted to this machine before the
first epoch, and the run is shortened while it trains if the machine gets slower. The boundary
loss, when a configuration turns it on, is guarded: if the mean val Dice falls more than
``hd_guard`` below its best from before the boundary term came in, the term is switched off for
the rest of the run and the weights go back to best.pt (logged, and kept in the checkpoint).

Under torchrun (see distributed.py) every process trains its share of each epoch through
DistributedDataParallel and validates its share of the val batches; the figures are combined
over all processes, so history and early stopping are the same on every rank. Only rank 0 writes
the files above, and it writes the plain model's weights: a checkpoint does not depend on the
number of processes, loads in one process and resumes under any number of them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from usseg.runtime.contract import Contract, InputSpec, default_postprocess
from usseg.runtime.provenance import usseg_version

from .augment import Augmenter, offline_copies
from .budget import RESERVE, Clock
from .budget_fit import fit_to_budget, fit_to_deadline
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .dataset import (
    Frames,
    SegDataset,
    load_frames,
    make_loader,
    make_val_loader,
    split_ids,
)
from .distributed import Comm, session, sync_batch_norm
from .ema import WeightAverage
from .io import DataError, write_json
from .losses import SegLoss, hausdorff_weight
from .maskfolder import open_mask_folder
from .metrics import by_class, json_number, mean_dice
from .model import build_model, describe_model
from .postprocess_choice import choose_for_run
from .run_folder import check_run_folder, clean_temporaries, clear_run
from .schedule import EpochSchedule
from .steps import resolve_device, train_epoch, validate

log = logging.getLogger(__name__)

# Fields that --resume accepts changed (each is logged); a new ``epochs`` reshapes the HD-weight
# and learning-rate schedules from the resumed epoch on. Any other change is an error.
RESUMABLE_CHANGES = ("epochs", "patience", "patience_start", "val_every", "num_workers", "device")


def make_contract(cfg: TrainConfig, classes: tuple[str, ...], provenance: dict[str, Any]) -> Contract:
    mcfg = cfg.model_config()
    return Contract(classes=tuple(classes), input=InputSpec(height=mcfg.height, width=mcfg.width, batch=1),
                    recipe=cfg.recipe_spec(),
                    postprocess=default_postprocess(tuple(classes), (mcfg.height, mcfg.width)),
                    provenance=provenance)


def best_entry(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first validation with the highest mean val Dice (the one best.pt holds)."""
    validations = [h for h in history if "val_dice" in h]
    return max(validations, key=lambda h: _key(h["mean_val_dice"])) if validations else None


def stale_validations(history: list[dict[str, Any]]) -> int:
    """Validations since the best one (for early stopping; derived, so --resume keeps it)."""
    validations = [h for h in history if "val_dice" in h]
    best = best_entry(history)
    return 0 if best is None else len(validations) - 1 - validations.index(best)


def _key(score: float | None) -> float:
    return -math.inf if score is None or math.isnan(score) else score


class Trainer:
    """One run: data, model and optimiser, the state that last.pt carries, and its outputs."""

    def __init__(self, cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, progress: bool = True,
                 comm: Comm | None = None, parts: dict[str, list[str]] | None = None) -> None:
        """``parts``: the train and val ids to use instead of the data set's split (a fold, folds.py)."""
        self.comm = comm or Comm(device=resolve_device(cfg.device))
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress and self.comm.is_main
        self.device = self.comm.device
        self.amp = cfg.amp and self.device.type == "cuda"
        self.folder = open_mask_folder(data_dir)
        self.classes = self.folder.classes
        self.fingerprint = self.folder.fingerprint()
        self._load_data(parts)
        self.rebuild()
        self.epoch, self.best_score, self.best_dice = -1, float("nan"), {}
        self.history: list[dict[str, Any]] = []
        self.hd_off: int | None = None  # the epoch after which the guard switched the boundary term off
        self.clock = Clock(math.inf)

    def rebuild(self) -> None:
        """Model, optimiser, schedule and loss for ``self.cfg`` (the data is kept)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = sync_batch_norm(build_model(cfg.model_config(), len(self.classes)), self.comm).to(self.device)
        self.net = self.comm.wrap(self.model)  # what trains; self.model is what checkpoints hold
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.scheduler = EpochSchedule(cfg.schedule, self.optimizer, cfg.lr, cfg.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.loss_fn = SegLoss(cfg.hd_cap)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated, saved as the model and exported: the weight average when there is one."""
        return self.average.module if self.average else self.model

    def _after_step(self) -> None:
        self.average.update(self.model)

    def _load_weights(self, state: dict[str, Any]) -> None:
        """The trained weights and the weight average from a checkpoint written by ``state``."""
        self.model.load_state_dict(state.get("trained_state_dict") or state["model_state_dict"])
        if self.average:
            self.average.load(state["model_state_dict"], int(state.get("ema_updates") or 1))

    def set_epochs(self, epochs: int) -> None:
        """Plan the run to ``epochs`` from here on (the schedule follows)."""
        self.cfg = replace(self.cfg, epochs=epochs)
        self.scheduler.epochs = epochs

    def fit_budget(self, seconds: float, candidates: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """Fit network, epochs, validation interval and patience to ``seconds`` (budget_fit.py)."""
        return fit_to_budget(self, seconds, candidates)

    def _load_data(self, parts: dict[str, list[str]] | None = None) -> None:
        cfg, mcfg = self.cfg, self.cfg.model_config()
        self.parts = parts or split_ids(self.folder, cfg.val_fraction)
        frames = {s: load_frames(self.folder, self.parts[s], cfg.recipe_spec(), mcfg.height, mcfg.width)
                  for s in ("train", "val")}
        train = frames["train"]
        if cfg.offline_copies:
            images, masks = offline_copies(train.images, train.masks, cfg.offline_copies, cfg.seed,
                                           cfg.augment_params())
            train = Frames(train.ids * (cfg.offline_copies + 1), images, masks)
            log.info("offline augmentation: %d train frames (%d copies each)", len(train), cfg.offline_copies)
        online = Augmenter(cfg.augment_params()) if cfg.augment and not cfg.offline_copies else None
        n = len(self.classes)
        self.train_set = SegDataset(train, n, online, cfg.seed)
        self.val_set = SegDataset(frames["val"], n)

    def restore(self, path: Path) -> None:
        """Continue from ``last.pt``: weights, optimiser, schedule, RNG, history.

        Rank 0 reads the file and sends it to the other ranks; it holds nothing that depends on
        the number of processes, so a run may go on with more or fewer of them.
        """
        state = self.comm.from_main(lambda: load_checkpoint(path))
        # fields added since the checkpoint was written count as their defaults
        saved, now = {**TrainConfig().to_dict(), **state.get("train_config", {})}, self.cfg.to_dict()
        changed = sorted(k for k in now if saved.get(k) != now[k])
        fixed = [k for k in changed if k not in RESUMABLE_CHANGES]
        if fixed:
            raise DataError(f"{path}: cannot resume with different {fixed} "
                            f"(was {[saved.get(k) for k in fixed]}, now {[now[k] for k in fixed]})")
        for k in changed:
            log.warning("resuming with %s = %r (was %r)", k, now[k], saved.get(k))
        if state.get("data_fingerprint") not in (None, self.fingerprint):
            raise DataError(f"{path}: trained on data {state['data_fingerprint']}, not {self.fingerprint}")
        self._load_weights(state)
        self.optimizer.load_state_dict(state["optimizer_state_dict"])  # the rate is set per epoch
        if state.get("scaler_state_dict"):
            self.scaler.load_state_dict(state["scaler_state_dict"])
        if state.get("rng_state") is not None:
            torch.set_rng_state(state["rng_state"])
        self.epoch, self.best_score = int(state["epoch"]), float(state["best_val_score"])
        self.best_dice = dict(state.get("best_val_dice", {}))
        self.history = list(state.get("history", []))
        self.hd_off = state.get("hd_switched_off")
        log.info("resuming %s after epoch %d (best mean val Dice %.4f)", path, self.epoch + 1, self.best_score)

    def state(self, val_dice: dict[str, float | None], mean: float) -> dict[str, Any]:
        """The checkpoint dict: tensors and JSON-like values only (loads with weights_only=True)."""
        provenance = {"data_fingerprint": self.fingerprint, "epoch": self.epoch, "val_dice": val_dice,
                      "mean_val_dice": json_number(mean), "usseg_version": usseg_version(),
                      "model": self.cfg.model_config().name}
        return {
            "epoch": self.epoch,
            "model_state_dict": self.eval_model.state_dict(),
            # with a weight average, the weights that train on (model_state_dict is the average)
            "trained_state_dict": self.model.state_dict() if self.average else None,
            "ema_updates": self.average.updates if self.average else 0,
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "scaler_state_dict": self.scaler.state_dict() if self.amp else None,
            "best_val_score": self.best_score,
            "best_val_dice": self.best_dice,
            "model_config": self.cfg.model_config().to_dict(),
            "contract": make_contract(self.cfg, self.classes, provenance).to_dict(),
            "train_config": self.cfg.to_dict(),
            "data_fingerprint": self.fingerprint,
            # the frames val Dice was measured on: `usseg evaluate --split val` scores the same ones
            # where the data set has no val split of its own (a carve, a fold)
            "val_ids": list(self.parts["val"]),
            "val_dice": val_dice,
            "history": self.history,
            "hd_switched_off": self.hd_off,
            "rng_state": torch.get_rng_state(),
        }

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch, validate when due; returns the epoch's history entry."""
        cfg = self.cfg
        hw = 0.0 if self.hd_off is not None else hausdorff_weight(epoch, cfg.epochs, cfg.hd_start, cfg.hd_end, cfg.hd_max)
        comm = self.comm
        self.train_set.set_epoch(epoch, fields=hw > 0)
        loader = make_loader(self.train_set, cfg.batch_size, True, cfg.seed, epoch, cfg.num_workers,
                             comm.rank, comm.world_size)
        lr = self.scheduler.apply(epoch)
        start = time.perf_counter()
        loss = train_epoch(self.net, loader, self.loss_fn, self.optimizer, self.scaler, hw, self.device, self.amp,
                           self._after_step if self.average else None)
        seconds = time.perf_counter() - start
        if comm.active:  # the mean over all ranks' frames (DistributedSampler's repeats included)
            total, frames = comm.sum(loss * len(loader.sampler), len(loader.sampler))
            loss = total / max(frames, 1)
        self.epoch = epoch
        entry = {"epoch": epoch, "train_loss": loss, "hd_weight": hw, "lr": lr, "seconds": round(seconds, 3),
                 "frames_per_s": round(len(self.train_set) / seconds, 2)}
        if (epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1:
            comm.broadcast_buffers(self.eval_model)  # rank 0's batch-norm statistics, as in its checkpoint
            val_loader = make_val_loader(self.val_set, cfg.batch_size, comm.rank, comm.world_size)
            val_loss, dice = validate(self.eval_model, val_loader, self.loss_fn, hw, len(self.classes), self.device,
                                      self.amp, comm)
            entry.update(val_loss=val_loss, val_dice=by_class(dice, self.classes),
                         mean_val_dice=json_number(mean_dice(dice)))
        self.history.append(entry)
        return entry

    def record(self, entry: dict[str, Any], writer: SummaryWriter | None) -> None:
        """TensorBoard scalars, best.pt when the mean val Dice improved, last.pt every epoch.

        Every rank keeps the best score (early stopping must agree); only rank 0 writes.
        """
        epoch = entry["epoch"]
        validated = [h for h in self.history if "val_dice" in h]
        val_dice, mean = (validated[-1]["val_dice"], validated[-1]["mean_val_dice"]) if validated else ({}, None)
        improved = "val_dice" in entry and _key(mean) > _key(self.best_score)
        if improved:
            self.best_score, self.best_dice = mean, dict(val_dice)
        if writer is None:  # not rank 0
            return
        writer.add_scalar("train/loss", entry["train_loss"], epoch)
        writer.add_scalar("train/hd_weight", entry["hd_weight"], epoch)
        writer.add_scalar("train/lr", entry["lr"], epoch)
        if "val_dice" in entry:
            writer.add_scalar("val/loss", entry["val_loss"], epoch)
            for name, value in entry["val_dice"].items():
                if value is not None:
                    writer.add_scalar(f"val/{name}", value, epoch)
            if mean is not None:
                writer.add_scalar("val/mean_dice", mean, epoch)
            if improved:
                save_checkpoint(self.out / "best.pt", self.state(val_dice, mean))
        save_checkpoint(self.out / "last.pt", self.state(val_dice, math.nan if mean is None else mean))

    def choose_postprocess(self, summary: dict[str, Any]) -> None:
        """The clean-up chosen on best.pt's val predictions, into its contract and ``summary``
        (postprocess_choice.py); rank 0 only, once training is over."""
        if self.comm.is_main:
            chosen = choose_for_run(self.out, self.folder, self.parts["val"], self.device)
            if chosen is not None:
                summary["postprocess"] = chosen

    def write_metrics(self, final: dict[str, Any] | None = None) -> None:
        if not self.comm.is_main:
            return
        validations = [h for h in self.history if "val_dice" in h]
        write_json(self.out / "metrics.json", {"classes": list(self.classes), "validations": validations,
                                               "best": best_entry(self.history), "final": final})

    def run(self) -> dict[str, Any]:
        """Epochs from the one after ``self.epoch`` to the end (or an early stop)."""
        cfg, first, comm = self.cfg, self.epoch + 1, self.comm
        writer = None
        if comm.is_main:
            write_json(self.out / "config.json", cfg.to_dict())
            writer = SummaryWriter(str(self.out / "tb"), purge_step=first or None)
        log.info("training %s (%d parameters) on %s: %d train / %d val frames, epochs %d-%d",
                 describe_model(cfg.model_config()), sum(p.numel() for p in self.model.parameters()), comm.describe(),
                 len(self.train_set), len(self.val_set), first + 1, cfg.epochs)
        if comm.active:
            log.info("batch size %d per process, %d per step (%d processes); learning rate %g as configured",
                     cfg.batch_size, cfg.batch_size * comm.world_size, comm.world_size, cfg.lr)
        started, stopped_early = time.perf_counter(), False
        self.clock.start(first)
        bar = tqdm(initial=first, total=cfg.epochs, unit="epoch", desc="train", disable=not self.progress,
                   dynamic_ncols=True)
        epoch = first
        with logging_redirect_tqdm():
            while epoch < self.cfg.epochs:
                fit_to_deadline(self, epoch)
                bar.total = self.cfg.epochs
                entry = self.run_epoch(epoch)
                self.record(entry, writer)
                bar.update(1)
                bar.set_postfix(loss=f"{entry['train_loss']:.4f}", best=f"{self.best_score:.4f}")
                if "val_dice" in entry:
                    self.write_metrics()
                    log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val Dice %s, mean %s; %s", epoch + 1,
                             self.cfg.epochs, entry["train_loss"], entry["val_loss"], _fmt(entry["val_dice"]),
                             _fmt(entry["mean_val_dice"]), self._progress(epoch))
                    self._guard_boundary_loss(entry)
                late = epoch + 1 >= self.cfg.patience_start * self.cfg.epochs
                if self.cfg.patience and late and stale_validations(self.history) >= self.cfg.patience:
                    log.info("early stop after epoch %d: no better mean val Dice in %d validations", epoch + 1,
                             self.cfg.patience)
                    stopped_early = True
                    break
                epoch += 1
        bar.close()
        if writer is not None:
            writer.close()
        return self.summary(first, time.perf_counter() - started, stopped_early)

    def _progress(self, epoch: int) -> str:
        """'best 0.63 at 35; 9.1 s/epoch, ends about 10:42:10 (in 7.3 min)'."""
        best = best_entry(self.history)
        text = f"best {_fmt(self.best_score)} at epoch {best['epoch'] + 1}" if best else "no best yet"
        end = self.clock.end_estimate(epoch, self.cfg.epochs)
        per_epoch = self.clock.seconds_per_epoch(epoch + 1)
        if end is not None and per_epoch is not None:
            left = end - time.monotonic()
            text += (f"; {per_epoch:.1f} s/epoch, ends about "
                     f"{time.strftime('%H:%M:%S', time.localtime(time.time() + left))} (in {left / 60:.1f} min)")
        return text

    def _guard_boundary_loss(self, entry: dict[str, Any]) -> None:
        """Switch the boundary term off, and go back to best.pt, when it costs more than hd_guard."""
        if self.hd_off is not None or entry["hd_weight"] <= 0:
            return
        before = [h["mean_val_dice"] for h in self.history
                  if "val_dice" in h and h["hd_weight"] == 0 and h["mean_val_dice"] is not None]
        now = entry["mean_val_dice"]
        if not before or now is None or now >= max(before) - self.cfg.hd_guard:
            return
        self.hd_off = entry["epoch"]
        entry["hd_switched_off"] = True
        log.warning("boundary loss switched off after epoch %d: mean val Dice fell to %.4f from %.4f before it "
                    "came in (more than hd_guard %.2f); training goes on with DiceCE from best.pt (epoch %d)",
                    entry["epoch"] + 1, now, max(before), self.cfg.hd_guard, best_entry(self.history)["epoch"] + 1)
        best = self.comm.from_main(lambda: load_checkpoint(self.out / "best.pt"))
        self._load_weights(best)
        self.optimizer.load_state_dict(best["optimizer_state_dict"])
        if self.comm.is_main:
            save_checkpoint(self.out / "last.pt", self.state(entry["val_dice"], entry["mean_val_dice"]))

    def summary(self, first: int, seconds: float, stopped_early: bool) -> dict[str, Any]:
        best = best_entry(self.history)
        summary = {
            "run": str(self.out), "best_epoch": best["epoch"] if best else None,
            "best_mean_val_dice": json_number(self.best_score),
            "best_val_dice": self.best_dice, "last_epoch": self.epoch, "epochs_this_session": self.epoch + 1 - first,
            "stopped_early": stopped_early, "train_seconds": round(seconds, 1),
            "frames": {k: len(v) for k, v in self.parts.items()}, "data_fingerprint": self.fingerprint,
            "model_config": self.cfg.model_config().to_dict(), "recipe": self.cfg.recipe_spec().to_dict(),
            "device": str(self.device), "processes": self.comm.world_size,
        }
        self.write_metrics(summary)
        return summary


def _short(value: Any) -> str:
    return str(value) if not isinstance(value, dict) else ", ".join(f"{k} {v}" for k, v in value.items())


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) + "}"
    return "-" if value is None else f"{value:.4f}"


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
          overwrite: bool = False, progress: bool = True, budget_s: float | None = None,
          candidates: list[dict[str, Any]] | None = None, started: float | None = None,
          on_fit: Callable[[TrainConfig, dict[str, str]], None] | None = None,
          parts: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Train on the mask folder ``data_dir`` into ``out_dir``; returns the run's summary.

    ``budget_s``: wall-clock seconds for the whole command, counted from ``started`` (monotonic;
    default now): a new run fits its network (the widest of ``candidates`` that fits, see
    budget.py) and epochs to what is left after loading the data; any run is shortened when it
    falls behind; ``on_fit(config, reasons)`` is called once the budget has fitted it. ``parts``:
    train and val ids instead of the data set's split. Raises DataError for unusable data, a missing last.pt on ``resume``, or an
    existing run in ``out_dir`` without ``resume`` or ``overwrite``.
    """
    out = Path(out_dir)
    started = time.monotonic() if started is None else started
    with session(resolve_device(cfg.device)) as comm:
        if budget_s is not None and comm.active:
            raise DataError("a time budget is not supported on many processes; give the epochs instead")
        comm.from_main(lambda: check_run_folder(out, resume, overwrite))
        if comm.is_main:
            clean_temporaries(out)
        trainer = Trainer(cfg, data_dir, out, progress, comm, parts)
        if resume:
            trainer.restore(out / "last.pt")
        elif comm.is_main:
            clear_run(out)
        reasons: dict[str, str] = {}
        if budget_s is not None:
            deadline = started + budget_s
            if not resume:
                left = (deadline - time.monotonic()) * (1 - RESERVE)
                if left <= 0:
                    raise DataError(f"the budget of {budget_s / 60:.1f} min was spent loading the data; give more time")
                reasons = trainer.fit_budget(left, candidates)
                for key, why in reasons.items():
                    value = getattr(trainer.cfg, key, None)
                    log.info("budget: %s%s: %s", key, "" if value is None else f" = {_short(value)}", why)
                if on_fit is not None:
                    on_fit(trainer.cfg, reasons)
            trainer.clock = Clock(deadline, max_epochs=trainer.cfg.epochs)
        summary = trainer.run()
        summary["total_seconds"] = round(time.monotonic() - started, 1)
        if budget_s is not None:
            summary["budget"] = {"seconds": round(budget_s, 1), "reasons": reasons,
                                 "fitted_epochs": trainer.clock.max_epochs, "epochs": trainer.cfg.epochs}
        trainer.choose_postprocess(summary)
        trainer.write_metrics(summary)
    return summary
