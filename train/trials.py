"""Choosing the training configuration by trial on val, inside the time budget: successive halving.

    summary = train_by_trial(fingerprint, plan, data, RUN, budget_s, started)

Every candidate (candidates.py: the plain script, the plan, DynUNet, one more) trains for a share
of the budget in its own run folder, ``RUN/trials/<name>/`` (config.json, best.pt, last.pt,
metrics.json, tb/); the better half (by best mean val Dice, the figure best.pt is chosen on) goes
on from where it stopped for a larger share, down to two; the winner goes on from its trial
weights in RUN itself for the rest of the budget. With four candidates: 10 % of the budget each,
then 15 % more for the best two, then the rest for the winner (55 % in all).

- Each round of a candidate is a short budgeted run: its epochs fill its share and its learning
  rate anneals to the round's end, so it is judged as a finished run of that length; the next
  round goes on from the same weights and optimiser, the rate rising again (a warm restart).
- The network width of a candidate is chosen, as a budget chooses it (budget.py), for the time
  it would train if it won, not for the trial alone.
- All time is counted: planning, loading, timing and every trial come out of the one budget.
  A round's seconds, the same for each of its candidates, are taken from what is left when it
  starts, so an overrun shortens the later rounds and the winner's rest; after the first round a
  candidate whose seconds do not hold one epoch sits the round out, and the winner trains no
  epoch it has no time for.
- Ties go to the candidate listed first (plain comes first); a candidate that fails (an error
  while it trains) is reported with its error and dropped.
- ``RUN/trials.json`` records the schedule, every candidate's configuration, every round (time,
  epochs, steps, val Dice), the winner and its margins; the trial folders keep their checkpoints,
  so a later choice on val (post-processing, an ensemble) can read them.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .budget import PATIENCE_START, RESERVE, TARGET_VALIDATIONS, Clock, Timing, size_run
from .budget_fit import choose_threads, fit_network
from .candidates import PLAIN, Candidate, propose
from .config import TrainConfig, resolve_config
from .distributed import ranks_from_env
from .fingerprint import Fingerprint
from .io import DataError, atomic_path, write_json
from .loop import Trainer
from .metrics import json_number
from .plan import Device, Plan
from .run_folder import clean_temporaries, clear_run

log = logging.getLogger("usseg.train.trials")

TRIAL_SHARE = 0.7          # of the budget, for all trial rounds together; the winner trains on for the rest
ROUND_GROWTH = 1.5         # a candidate's time in a round, against its time in the round before
ROUND_VALIDATIONS = 4      # validations per candidate per round, the last at its end
TRIALS_DIR = "trials"


def halving_rounds(n: int) -> list[int]:
    """Candidates in each trial round: all, then the better half (rounded up), down to two; none
    for a single candidate. 4 -> [4, 2]; 5 -> [5, 3, 2]."""
    rounds = []
    while n >= 2:
        rounds.append(n)
        n = math.ceil(n / 2) if n > 2 else 1
    return rounds


def round_shares(n: int) -> list[float]:
    """Share of the budget each candidate trains for in each round: growing by ROUND_GROWTH from
    round to round, TRIAL_SHARE for all rounds together. 4 -> [0.1, 0.15]."""
    rounds = halving_rounds(n)
    weights = [ROUND_GROWTH ** r for r in range(len(rounds))]
    unit = TRIAL_SHARE / sum(k * w for k, w in zip(rounds, weights)) if rounds else 0.0
    return [unit * w for w in weights]


def _key(score: float | None) -> float:
    return -math.inf if score is None or math.isnan(score) else score


def advance(scores: list[tuple[str, float | None]], keep: int) -> list[str]:
    """The ``keep`` best names by score, in order; ``scores`` are in candidate order, ties go to
    the earlier one, and a failed candidate (score None) never advances."""
    ranked = sorted((i for i, (_, s) in enumerate(scores) if s is not None), key=lambda i: (-_key(scores[i][1]), i))
    return [scores[i][0] for i in ranked[:keep]]


@dataclass
class Trial:
    """One candidate's trials: its run folder, its trainer while it is in the race, its rounds."""

    candidate: Candidate
    folder: Path
    trainer: Trainer | None = None
    config: TrainConfig | None = None  # as fitted and last trained (kept once the trainer is let go)
    timing: Timing | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    timed: dict[int, Timing] | None = None  # timings made before its first round, by width index
    error: str | None = None
    exception: Exception | None = None
    status: str = "in the race"

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def score(self) -> float | None:
        """Best mean val Dice so far; None once failed."""
        if self.error is not None:
            return None
        return self.rounds[-1]["best_mean_val_dice"] if self.rounds else None

    def score_in(self, round_index: int) -> float | None:
        return next((r["best_mean_val_dice"] for r in self.rounds if r["round"] == round_index), None)

    def to_dict(self) -> dict[str, Any]:
        config = self.config or self.candidate.config
        return {"name": self.name, "why": self.candidate.why, "status": self.status, "folder": str(self.folder),
                "config": config.to_dict(), "rounds": self.rounds, "fit": self.reasons, "error": self.error}


class Race:
    """The trials of ``candidates`` inside ``budget_s`` counted from ``started`` (monotonic)."""

    def __init__(self, candidates: list[Candidate], data: Path, out: Path, budget_s: float, started: float) -> None:
        if len(candidates) < 2:
            raise ValueError(f"trials need at least two candidates, got {[c.name for c in candidates]}")
        self.data, self.out, self.budget_s = data, out, budget_s
        self.deadline = started + budget_s * (1 - RESERVE)
        self.trials = [Trial(c, out / TRIALS_DIR / c.name) for c in candidates]
        self.rounds, self.shares = halving_rounds(len(candidates)), round_shares(len(candidates))
        self.threads: str | None = None   # the thread choice, made once on the first candidate
        self.warned = False               # the budget-too-short warning is given once
        self.trials_seconds = 0.0

    def track_seconds(self) -> float:
        """The time a candidate trains for if it wins: its trial rounds and the rest of the budget."""
        return self.budget_s * (sum(self.shares) + 1 - TRIAL_SHARE)

    def allot(self, share: float, work_left: float) -> float:
        """Seconds for a step worth ``share`` of the budget, of ``work_left`` (shares) still to do:
        what is left of the budget, in proportion, so an overrun shortens the rounds after it and
        the winner's rest."""
        left = self.deadline - time.monotonic()
        return max(left, 0.0) * share / work_left

    def run(self) -> Trial:
        """All trial rounds; returns the winner, its trainer ready to go on."""
        start = time.monotonic()
        self.set_up()
        racing = [t for t in self.trials if t.error is None]
        for r, share in enumerate(self.shares):
            # the same seconds for every candidate of a round, from what is left when it starts
            later = sum(k * s for k, s in zip(self.rounds[r + 1:], self.shares[r + 1:]))
            seconds = self.allot(share, len(racing) * share + later + 1 - TRIAL_SHARE)
            for trial in racing:
                self.run_round(trial, r, seconds)
            keep = self.rounds[r + 1] if r + 1 < len(self.rounds) else 1
            scored = [(t.name, t.score) for t in racing]
            kept = advance(scored, keep)
            if not kept:  # every candidate failed: the first one's error is the run's
                self.trials_seconds = time.monotonic() - start
                raise next(t.exception for t in racing if t.exception is not None)
            for trial in racing:
                if trial.name not in kept and trial.error is None:
                    trial.status = f"stopped after round {r + 1}"
                    trial.trainer = None  # its checkpoints stay in its folder
            racing = [t for t in racing if t.name in kept]
            log.info("trials round %d: %s; %s go%s on", r + 1, ", ".join(f"{n} {_fmt(s)}" for n, s in scored),
                     " and ".join(kept), "es" if len(kept) == 1 else "")
            self.write()
        self.trials_seconds = time.monotonic() - start
        winner = racing[0]
        winner.status = "won"
        return winner

    def run_round(self, trial: Trial, r: int, seconds: float) -> None:
        """Round ``r`` (0-based) of ``trial`` in ``seconds``: a new trainer fitted to them, or the
        one it has going on. After the first round a candidate whose seconds do not hold one more
        epoch sits the round out (its score stands). An error drops the candidate; it is logged
        and recorded."""
        start = time.monotonic()
        deadline = start + seconds
        first = 0 if trial.trainer is None else trial.trainer.epoch + 1
        try:
            if trial.trainer is None:
                self._load(trial)
            if not trial.rounds:
                widths = trial.candidate.widths or [trial.candidate.config.model_overrides]
                trial.reasons, trial.timing = fit_network(
                    trial.trainer, max(deadline - time.monotonic(), 0.0), widths, track_seconds=self.track_seconds(),
                    validations=ROUND_VALIDATIONS, early_stop=False, timed=trial.timed)
            elif not self._extend(trial, deadline - time.monotonic(), first):
                log.info("trial %s sits out round %d: %.0f s do not hold one epoch (%.0f s)", trial.name, r + 1,
                         seconds, epoch_seconds(trial.trainer, trial.timing))
            trainer = trial.trainer
            trial.config = trainer.cfg
            if trainer.cfg.epochs > first:
                trainer.clock = Clock(deadline, max_epochs=trainer.cfg.epochs)
                log.info("trial %s, round %d: %.0f s from epoch %d", trial.name, r + 1, seconds, first + 1)
                trainer.run()
                trial.config = trainer.cfg
        except Exception as exc:  # noqa: BLE001  (any failure of one candidate drops it, reported; the others go on)
            trial.error, trial.exception = f"{type(exc).__name__}: {exc}", exc
            trial.status = f"failed in round {r + 1}"
            trial.trainer = None
            log.warning("trial %s failed in round %d and is dropped: %s", trial.name, r + 1, trial.error)
        trainer = trial.trainer
        done = trainer.epoch + 1 - first if trainer is not None else 0
        took = time.monotonic() - start
        if r == 0 and trainer is not None and took > 1.5 * seconds and not self.warned:
            self.warned = True
            log.warning("the budget is short for trials on this machine: %s's share was %.0f s and its first "
                        "epoch alone took longer (%.0f s); give a longer --budget for a fair choice", trial.name,
                        seconds, took)
        trial.rounds.append({
            "round": r + 1, "seconds": round(took, 1), "allotted_seconds": round(seconds, 1),
            "epochs": [first + 1, first + done] if done else [],
            "steps": done * _batches(trainer)[0] if trainer is not None else 0,
            "best_mean_val_dice": json_number(trainer.best_score) if trainer is not None else None,
            "best_val_dice": dict(trainer.best_dice) if trainer is not None else {},
        })

    def _load(self, trial: Trial) -> None:
        """A new trainer in the trial's folder, its data loaded."""
        clean_temporaries(trial.folder)
        clear_run(trial.folder)
        trial.trainer = Trainer(trial.candidate.config, self.data, trial.folder, progress=False)

    def set_up(self) -> None:
        """Before the first round, on the first candidate: what the first start of a trainer costs
        once (imports, first allocations), and the PyTorch threads for all candidates (the machine
        is the same for all). Counted in the budget, in no candidate's share."""
        first = self.trials[0]
        try:
            self._load(first)
            widths = first.candidate.widths or [first.candidate.config.model_overrides]
            self.threads, timing = choose_threads(first.trainer, widths[0])
            first.timed = {0: timing} if timing is not None else None
        except Exception as exc:  # noqa: BLE001  (reported and dropped as in a round)
            first.error, first.exception, first.status = f"{type(exc).__name__}: {exc}", exc, "failed to start"
            first.trainer = None
            log.warning("trial %s failed to start and is dropped: %s", first.name, first.error)

    def _extend(self, trial: Trial, seconds: float, first: int) -> bool:
        """Plan ``seconds`` more epochs for a trial's trainer, timed from its last round; False
        (and nothing planned) when they do not hold one epoch."""
        trainer = trial.trainer
        trial.timing = measured_timing(trainer, trial.timing)
        if seconds < epoch_seconds(trainer, trial.timing):
            return False
        size = size_run(seconds, trial.timing, *_batches(trainer), ROUND_VALIDATIONS)
        trainer.cfg = replace(trainer.cfg, val_every=size.val_every)
        trainer.set_epochs(first + size.epochs)
        return True

    def write(self, final: dict[str, Any] | None = None) -> None:
        write_json(self.out / "trials.json", self.report(final))

    def report(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        winner = next((t for t in self.trials if t.status == "won"), None)
        return {
            "budget_seconds": round(self.budget_s, 1),
            "schedule": {"rounds": self.rounds, "shares": [round(s, 4) for s in self.shares],
                         "final_share": round(1 - sum(k * s for k, s in zip(self.rounds, self.shares)), 4)},
            "threads": self.threads,
            "trials_seconds": round(self.trials_seconds, 1),
            "trials_share": round(self.trials_seconds / self.budget_s, 4),
            "winner": winner.name if winner else None,
            "margins": margins(self.trials, winner) if winner else None,
            "final": final,
            "candidates": [t.to_dict() for t in self.trials],
        }


def _batches(trainer: Trainer) -> tuple[int, int]:
    """(training steps per epoch, validation batches)."""
    batch = trainer.cfg.batch_size
    return math.ceil(len(trainer.train_set) / batch), math.ceil(len(trainer.val_set) / batch)


def epoch_seconds(trainer: Trainer, timing: Timing) -> float:
    """Estimated seconds of one epoch with its validation."""
    steps, val_batches = _batches(trainer)
    return steps * timing.step_s + val_batches * timing.val_batch_s


def measured_timing(trainer: Trainer, timed: Timing | None) -> Timing:
    """Seconds per step from the trainer's recent epochs (their training time), the validation
    time per batch as timed before; the timing made before where nothing was measured."""
    steps, _ = _batches(trainer)
    recent = [h["seconds"] for h in trainer.history[-5:]]
    val_s = timed.val_batch_s if timed is not None else 0.0
    if not recent:
        return timed or Timing(step_s=1.0, val_batch_s=val_s)
    return Timing(step_s=sum(recent) / len(recent) / steps, val_batch_s=val_s)


def margins(trials: list[Trial], winner: Trial) -> dict[str, Any]:
    """The winner's lead on val over the runner-up and over the plain candidate, each in the last
    round both trained (the same time each)."""
    out: dict[str, Any] = {}
    others = [t for t in trials if t is not winner and t.error is None and t.rounds]
    if others:
        runner = max(others, key=lambda t: (len(t.rounds), _key(t.score), -trials.index(t)))
        r = runner.rounds[-1]["round"]
        out["runner_up"] = _lead(winner, runner, r)
    plain = next((t for t in trials if t.name == PLAIN), None)
    if plain is not None and plain is not winner and plain.rounds and plain.error is None:
        out["plain"] = _lead(winner, plain, plain.rounds[-1]["round"])
    return out


def _lead(winner: Trial, other: Trial, r: int) -> dict[str, Any]:
    mine, theirs = winner.score_in(r), other.score_in(r)
    delta = None if mine is None or theirs is None else round(mine - theirs, 4)
    return {"name": other.name, "round": r, "score": theirs, "winner_score": mine, "delta": delta}


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def copy_checkpoint(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def train_by_trial(fp: Fingerprint, plan: Plan, data: Path, out: Path, budget_s: float, started: float,
                   overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Propose candidates, try them on val inside ``budget_s`` (counted from ``started``), and
    train the winner on in ``out`` for the rest; returns the run's summary with its ``trials``.

    ``overrides`` (the CLI's --seed, --device, --batch-size) apply to every candidate."""
    from .plan_cli import write_plan

    ranks = ranks_from_env()
    if ranks is not None and ranks[1] > 1:
        raise DataError("trials on val run in one process: give --profile, --config or --plan (for example a "
                        "trials run's RUN/plan.json) and --epochs to train on many processes")
    candidates = [replace(c, config=resolve_config(c.config, None, overrides)) for c in
                  propose(fp, plan, Device(**plan.info["device"]))]
    clean_temporaries(out)
    clear_run(out)
    shutil.rmtree(out / TRIALS_DIR, ignore_errors=True)
    race = Race(candidates, data, out, budget_s, started)
    log.info("trials: %d candidates (%s) in %d rounds, %s of the budget each, then the winner goes on",
             len(candidates), ", ".join(c.name for c in candidates), len(race.rounds),
             " then ".join(f"{s:.0%}" for s in race.shares))
    try:
        winner = race.run()
    finally:
        race.write()
    summary, why_final, first = go_on(winner, out, started + budget_s, progress)
    summary["total_seconds"] = round(time.monotonic() - started, 1)
    summary["budget"] = {"seconds": round(budget_s, 1), "reasons": why_final,
                         "fitted_epochs": winner.trainer.clock.max_epochs, "epochs": winner.trainer.cfg.epochs}
    final = {"epochs": [first + 1, summary["last_epoch"] + 1] if summary["last_epoch"] >= first else [],
             "best_mean_val_dice": summary["best_mean_val_dice"], "best_epoch": summary["best_epoch"]}
    summary["trials"] = race.report(final)
    winner.trainer.choose_postprocess(summary)
    winner.trainer.write_metrics(summary)
    race.write(final)
    width = {"model_overrides": winner.reasons["model_overrides"]} if "model_overrides" in winner.reasons else {}
    reasons = {"trials": choice_line(summary["trials"]), "candidate": winner.candidate.why, **width, **why_final}
    if winner.name == "plan":
        reasons = {**plan.reasons, **reasons}
    write_plan(out, fp, replace(plan, reasons={}, candidates=[]), reasons, winner.trainer.cfg)
    return summary


def go_on(winner: Trial, out: Path, deadline: float, progress: bool) -> tuple[dict[str, Any], dict[str, str], int]:
    """The winner's trainer goes on from its trial weights in ``out`` until ``deadline``, with
    early stopping; best.pt starts as its trial's best. Returns (its summary, the reasons, the
    first epoch it trained here, 0-based)."""
    trainer = winner.trainer
    for name in ("best.pt", "last.pt"):
        if (winner.folder / name).is_file():
            copy_checkpoint(winner.folder / name, out / name)
    trainer.out, trainer.progress = out, progress
    left = max(deadline - time.monotonic(), 0.0) * (1 - RESERVE)  # a little kept for the last writes
    timing = measured_timing(trainer, winner.timing)
    size = size_run(left, timing, *_batches(trainer), TARGET_VALIDATIONS)
    more = size.epochs if left >= epoch_seconds(trainer, timing) else 0  # the budget is the budget
    first = trainer.epoch + 1
    trainer.cfg = replace(trainer.cfg, val_every=size.val_every, patience=size.patience,
                          patience_start=PATIENCE_START)
    trainer.set_epochs(first + more)
    trainer.clock = Clock(deadline, max_epochs=trainer.cfg.epochs)
    why = {
        "epochs": (f"{winner.name} goes on from its trial weights (epoch {first}) for {more} more epochs "
                   f"at {timing.step_s:.3f} s per step, to fill the {left / 60:.1f} min left"),
        "val_every": f"every {size.val_every} epochs: about {TARGET_VALIDATIONS} validations in the rest",
        "patience": (f"stop after {size.patience} validations without a better mean val Dice (30 %), "
                     f"not before {PATIENCE_START:.0%} of the epochs"),
    }
    log.info("%s", why["epochs"])
    if more:
        return trainer.run(), why, first
    write_json(out / "config.json", trainer.cfg.to_dict())
    return trainer.summary(first, 0.0, False), why, first


def choice_line(report: dict[str, Any]) -> str:
    """'dynunet won the trials: +0.0150 on val over plan (round 2), +0.0400 over plain (round 1)'."""
    m = report.get("margins") or {}
    parts = [f"{'+' if lead['delta'] is not None and lead['delta'] >= 0 else ''}{_fmt(lead['delta'])} on val over "
             f"{lead['name']} ({'the runner-up, ' if key == 'runner_up' else ''}round {lead['round']})"
             for key, lead in m.items()]
    return f"{report['winner']} won the trials" + (": " + ", ".join(parts) if parts else "")


def summary_lines(report: dict[str, Any], out: Path) -> list[str]:
    """The lines ``usseg train`` ends with after trials: who won, by how much, at what cost."""
    budget = report["budget_seconds"]
    dropped = [c for c in report["candidates"] if c["error"]]
    lines = [f"trials: {len(report['candidates'])} candidates in {len(report['schedule']['rounds'])} round(s) took "
             f"{report['trials_seconds']:.0f} s, {report['trials_share']:.0%} of the {budget / 60:.1f} min budget; "
             f"{out / 'trials.json'} has every trial"]
    lines.append(choice_line(report))
    final, plain = report.get("final") or {}, next((c for c in report["candidates"] if c["name"] == PLAIN), None)
    if final:
        went_on = (f"went on from its trial weights, epochs {final['epochs'][0]}-{final['epochs'][1]}" if final["epochs"]
                   else "had no time left to go on from its trial weights")
        line = f"{report['winner']} {went_on}: best mean val Dice {_fmt(final['best_mean_val_dice'])}"
        best_plain = plain["rounds"][-1]["best_mean_val_dice"] if plain and plain["rounds"] else None
        if plain is not None and plain["name"] != report["winner"] and best_plain is not None and \
                final["best_mean_val_dice"] is not None:
            line += f", {final['best_mean_val_dice'] - best_plain:+.4f} over plain's best in its trials ({best_plain:.4f})"
        lines.append(line)
    lines += [f"dropped: {c['name']} ({c['error']})" for c in dropped]
    return lines
