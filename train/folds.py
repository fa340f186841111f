"""Cross-validation: K runs of one configuration on folds of train+val; the test split is never used.

    usseg train --data DIR --out RUN --folds 5 [--budget 1h] [--profile P | --config F | --plan F]
                [--groups FILE.csv | --group-pattern REGEX]

``RUN/fold_<k>/`` is a normal run folder (config.json, best.pt, last.pt, metrics.json, tb/),
trained on the other folds and validated on fold k; ``RUN/folds.json`` lists each fold's val
frames and best val Dice, and their mean and spread over the folds; every fold's best.pt is
where a fold ensemble is read from. The configuration is the one ``usseg train`` would train
without trials (the profile, config file or plan given, else the plan made from the data); with
a budget, each fold gets an equal share of what is left when it starts, and the network fitted
to the first fold's share is kept for the others, so that every fold trains the same network.

Folds are stratified on class presence (iterstrat's MultilabelStratifiedKFold). With groups (a
patient, a sweep; given as ``usseg prepare`` takes them, groups.py), every group stays in one
fold, stratified as far as the groups allow (scikit-learn's StratifiedGroupKFold on the
class-presence pattern).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from usseg.runtime.errors import UsageError

from .config import PROFILES, resolve_config
from .groups import frame_groups
from .io import DataError, write_json
from .maskfolder import MaskFolder, open_mask_folder
from .splits import _pattern_labels, presence_matrix

log = logging.getLogger("usseg.train")

FOLD_SEED = 42


def fold_split(ids: list[str], presence: np.ndarray, k: int, seed: int = FOLD_SEED,
               groups: list[str] | None = None) -> list[list[str]]:
    """The val ids of each of ``k`` folds: disjoint, together all of ``ids``, deterministic for a
    seed; frames of one group (``groups[i]`` for ``ids[i]``) always in the same fold."""
    if k < 2:
        raise UsageError(f"--folds {k}: needs at least 2 folds")
    units = len(set(groups)) if groups is not None else len(ids)
    if k > units:
        raise UsageError(f"--folds {k}: only {units} {'groups' if groups is not None else 'frames'} in train+val")
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    ids, presence = [ids[i] for i in order], presence[order]
    x = np.zeros(len(ids))
    if groups is None:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splits = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, presence)
    else:
        from sklearn.model_selection import StratifiedGroupKFold

        groups = [groups[i] for i in order]
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            x, _pattern_labels(presence), groups)
    return [sorted(ids[i] for i in val) for _, val in splits]


def fold_parts(folder: MaskFolder, k: int, seed: int = FOLD_SEED,
               groups: dict[str, str] | None = None) -> list[dict[str, list[str]]]:
    """{"train", "val"} ids of each fold of the data set's train and val frames."""
    ids = sorted(folder.ids("train") + folder.ids("val"))
    if not ids:
        raise DataError(f"{folder.root / 'split.csv'}: no 'train' or 'val' frames to make folds of")
    present = [set(np.unique(folder.load(i)[1]).tolist()) for i in ids]
    per_frame = None if groups is None else [groups[i] for i in ids]
    folds = fold_split(ids, presence_matrix(present, len(folder.classes)), k, seed, per_frame)
    return [{"train": sorted(set(ids) - set(val)), "val": val} for val in folds]


def _done(run: Path) -> dict[str, Any] | None:
    """The summary of a fold run that has finished, else None."""
    try:
        final = json.loads((run / "metrics.json").read_text()).get("final")
    except (OSError, ValueError):
        return None
    return final if (run / "last.pt").is_file() and isinstance(final, dict) else None


def spread(values: list[float]) -> dict[str, float | None]:
    """Mean, standard deviation (n - 1), min and max of the folds' figures (None where absent)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": round(float(v.mean()), 4), "std": round(std, 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4)}


def train_folds(args: argparse.Namespace, budget_s: float | None, started: float) -> int:
    """``usseg train --folds K [--groups FILE.csv | --group-pattern REGEX]``: every fold's run,
    then RUN/folds.json and the summary lines."""
    from .loop import train
    from .train_cli import prepare

    k, out = args.folds, args.out
    folder = open_mask_folder(args.data)
    groups = None
    if args.groups is not None or args.group_pattern is not None:
        ids = folder.ids("train") + folder.ids("val")
        groups = dict(zip(ids, frame_groups(ids, args.groups, args.group_pattern)))
    parts = fold_parts(folder, k, groups=groups)
    runs = [out / f"fold_{i}" for i in range(k)]
    if not args.resume and not args.overwrite:
        taken = [str(r) for r in runs if (r / "last.pt").exists()]
        if taken:
            raise DataError(f"{taken[0]}: already holds a run; pass --resume to continue the folds or --overwrite "
                            "to start again")
    if args.resume and not (out / "config.json").is_file():
        raise DataError(f"{out / 'config.json'}: nothing to resume")
    cfg, candidates, on_fit, _ = prepare(args, started)
    write_json(out / "config.json", cfg.to_dict())  # what the folds train: --resume starts from it
    results: list[dict[str, Any]] = []
    for i, (run, part) in enumerate(zip(runs, parts)):
        summary = _done(run) if args.resume else None
        if summary is None:
            resume = args.resume and (run / "last.pt").is_file()
            fold_cfg = resolve_config(PROFILES["demo"], run / "config.json") if resume else cfg
            now = time.monotonic()
            share = None if budget_s is None else max((started + budget_s - now) / (k - i), 1.0)
            log.info("fold %d of %d: %d train / %d val frames%s", i + 1, k, len(part["train"]), len(part["val"]),
                     "" if share is None else f", {share / 60:.1f} min")
            try:
                summary = train(fold_cfg, args.data, run, resume=resume, overwrite=args.overwrite,
                                progress=not args.no_progress, budget_s=share, candidates=candidates if i == 0 else None,
                                started=now, on_fit=on_fit if i == 0 else None, parts=part)
            except KeyboardInterrupt:
                log.error("interrupted in fold %d; resume with  usseg train --data %s --out %s --folds %d --resume",
                          i, args.data, out, k)
                return 130
            if i == 0 and budget_s is not None:  # the network fitted to the first fold trains every fold
                fitted = json.loads((run / "config.json").read_text())["model_overrides"]
                cfg, candidates = replace(cfg, model_overrides=fitted), None
                write_json(out / "config.json", cfg.to_dict())
        results.append({"fold": i, "folder": str(run), "train_frames": len(part["train"]),
                        "val_frames": len(part["val"]), "val_ids": part["val"],
                        "best_mean_val_dice": summary.get("best_mean_val_dice"),
                        "best_val_dice": summary.get("best_val_dice", {}), "best_epoch": summary.get("best_epoch")})
        log.info("fold %d: best mean val Dice %s", i, _fmt(summary.get("best_mean_val_dice")))
    report = {"folds": k, "seed": FOLD_SEED, "groups": None if groups is None else len(set(groups.values())),
              "mean_val_dice": spread([r["best_mean_val_dice"] for r in results]),
              "per_class": {c: spread([r["best_val_dice"].get(c) for r in results]) for c in folder.classes[1:]},
              "total_seconds": round(time.monotonic() - started, 1), "runs": results}
    write_json(out / "folds.json", report)
    m = report["mean_val_dice"]
    log.info("cross-validation, %d folds of %d train+val frames: mean val Dice %s +- %s (min %s, max %s); %s",
             k, sum(r["val_frames"] for r in results), _fmt(m["mean"]), _fmt(m["std"]), _fmt(m["min"]),
             _fmt(m["max"]), out / "folds.json")
    log.info("next: usseg evaluate --model %s --data %s; the folds as one model: usseg export --model %s --ensemble "
             "--out MODELS", runs[0] / "best.pt", args.data, out)
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
