"""usseg train: train a segmentation model on a mask folder (see usseg prepare).

    usseg train --data DIR --out RUN [--budget 30m] [--plan FILE | --profile demo|seed|plain|tiny] [--config FILE]
                [--epochs N] [--batch-size N] [--device auto|cpu|cuda|cuda:N] [--seed S] [--resume | --overwrite]
                [--folds K]

Without --profile, --config or --plan the run is planned from the data (as ``usseg plan`` does;
RUN/fingerprint.json and RUN/plan.json say what was measured and why each value was chosen), and
with --budget the configuration is chosen by trial on val among candidates proposed from the data,
the plain script's always among them (trials.py; RUN/trials.json, RUN/trials/<name>/).
--budget fits the network and the epochs to that much wall time on this machine, by timing real
training steps first; without it the plan's or the profile's epochs are trained. --folds K trains
the configuration on K folds of train+val instead (folds.py). The configuration
is the plan or profile, then the --config file, then the flags given here. With --resume and none
of --profile, --config, --plan, the run's own RUN/config.json is the base.

On many processes, unchanged: ``torchrun --nproc-per-node N -m usseg.train.train_cli ...``
(see usseg.train.distributed). Only rank 0 logs progress; the others log warnings and errors,
marked with their rank.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from usseg.runtime.cli import add_device_option, add_out_option, alias_main
from usseg.runtime.contract import ContractError
from usseg.runtime.errors import EXIT_SOME_FAILED, UsageError, UssegError, WriteError
from usseg.runtime.fileio import output_lock
from usseg.runtime.imageio import add_max_pixels_option
from usseg.runtime.interrupt import EXIT_CODES, stop_signals, stopped_by

from .config import DEVICES, PROFILES, TrainConfig, resolve_config
from .io import set_max_pixels

log = logging.getLogger("usseg.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="mask folder (images/, masks/, split.csv, classes.json)")
    add_out_option(p, "run folder: checkpoints, config.json, metrics.json, tb/ (and plan.json, fingerprint.json when planned)")
    p.add_argument("--budget", metavar="TIME", help="wall time for the whole run on this machine: 30m, 1h30m, 90s")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--plan", type=Path, help="a plan file (usseg plan; edit it if you like) as the base")
    base.add_argument("--profile", choices=sorted(PROFILES), help="a built-in configuration as the base")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields, applied over the base")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    add_device_option(p, allowed=DEVICES)
    p.add_argument("--seed", type=int)
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue RUN/last.pt at the next epoch")
    run.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--folds", type=int, metavar="K", help="cross-validation: K runs on folds of train+val, "
                   "RUN/fold_0 ... RUN/fold_K-1, and the mean and spread of their val Dice in RUN/folds.json")
    together = p.add_mutually_exclusive_group()
    together.add_argument("--groups", type=Path, metavar="FILE.csv",
                          help="with --folds: id,group per frame (a patient, a sweep): every group in one fold")
    together.add_argument("--group-pattern", metavar="REGEX",
                          help="with --folds: the group from each id (file stem): the first capture group, or the "
                               "whole match")
    add_max_pixels_option(p)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    device = None if args.device == "auto" else args.device  # auto: the plan's or profile's own
    return {"epochs": args.epochs, "batch_size": args.batch_size, "device": device, "seed": args.seed}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration from a profile, a plan file or a run's own config.json (no planning)."""
    overrides = _overrides(args)
    own = args.out / "config.json"
    if args.resume and args.profile is None and args.config is None and args.plan is None and own.is_file():
        return resolve_config(PROFILES["demo"], own, overrides)
    if args.plan is not None:
        return resolve_config(resolve_config(PROFILES["demo"], args.plan), args.config, overrides)
    return resolve_config(args.profile or "demo", args.config, overrides)


def plan_candidates(path: Path) -> list[dict[str, Any]] | None:
    """The networks a plan file lets a budget choose among (``plan.candidates``), if any."""
    data = json.loads(path.read_text())
    candidates = (data.get("plan") or {}).get("candidates") if isinstance(data, dict) else None
    if candidates is not None and not (isinstance(candidates, list) and all(isinstance(c, dict) for c in candidates)):
        raise UsageError(f"{path}: key 'plan.candidates' must be a list of model_overrides objects")
    return candidates or None


def prepare(args: argparse.Namespace, started: float) -> tuple[TrainConfig, list[dict[str, Any]] | None, Any, Any]:
    """(configuration, budget candidates, a callback that writes RUN/plan.json once the budget has
    fitted the run, or None, the (fingerprint, plan) when planned from the data, or None)."""
    planned = args.profile is None and args.config is None and args.plan is None and not args.resume
    if not planned:
        cfg = config_from_args(args)
        return cfg, plan_candidates(args.plan) if args.plan is not None and args.budget else None, None, None
    from .plan_cli import plan_data, write_plan

    fp, plan = plan_data(args.data, args.device)
    cfg = resolve_config(plan.config, None, _overrides(args))
    log.info("planned from %s in %.0f s (RUN/plan.json gives the reasons)", args.data, time.monotonic() - started)

    def on_fit(final: TrainConfig, reasons: dict[str, str]) -> None:
        write_plan(args.out, fp, plan, reasons, final)

    on_fit(cfg, {})
    return cfg, plan.candidates, on_fit, (fp, replace(plan, config=cfg))


def check_paths(out: Path, data: Path) -> None:
    """--out and --data, before anything is loaded: the run folder is a folder of its own."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    run, data_dir = Path(os.path.realpath(out)), Path(os.path.realpath(data))
    if run == data_dir or data_dir in run.parents:
        raise UsageError(f"--out {out}: is {'the' if run == data_dir else 'inside the'} --data folder {data}; "
                         f"the run's files would mix with the data set: give a folder outside it")


def check_classes(data: Path, cfg: TrainConfig | None) -> None:
    """classes.json names classes a model can carry (names, how many), read before any frame."""
    from usseg.train.loop import make_contract
    from usseg.train.maskfolder import read_classes

    path = data / "classes.json"
    if not data.is_dir():
        return  # the data set's own check names it
    classes = read_classes(path)
    try:
        make_contract(cfg or TrainConfig(), classes, {})
    except ContractError as exc:
        raise UsageError(f"{path}: {str(exc).replace('contract field ', '')}") from None


def check_masks(data: Path) -> None:
    """Some training mask holds a structure (read until the first that does): a data set whose
    masks are all background trains a model that finds nothing, and no best.pt."""
    from usseg.train.io import read_image
    from usseg.train.maskfolder import open_mask_folder

    folder = open_mask_folder(data)
    ids = folder.ids("train")
    if ids and not any(read_image(folder.mask_path(item)).any() for item in ids):
        raise UsageError(f"{data / 'masks'}: all {len(ids)} training masks are empty (background only): there is "
                         f"nothing to learn; check the annotations, or the class indices the masks use")


def run(args: argparse.Namespace) -> int:
    set_max_pixels(args.max_pixels)
    started = time.monotonic()
    check_paths(args.out, args.data)
    # torch and MONAI load here, after the arguments are checked
    from .budget import parse_duration
    from .loop import train
    from .run_folder import check_run_folder, resume_hint

    main_rank = os.environ.get("RANK") in (None, "0")  # under torchrun only rank 0 writes, and locks
    try:  # a configuration that makes no sense here (a field, a device): one line, exit code 2
        budget_s = parse_duration(args.budget) if args.budget is not None else None
        if budget_s is not None and args.epochs is not None:
            raise UsageError("--budget and --epochs both set the length of the run; give one of them")
        if (args.groups is not None or args.group_pattern is not None) and args.folds is None:
            raise UsageError("--groups and --group-pattern shape the folds of --folds; the split of a data set is "
                             "grouped by usseg prepare")
        by_rules = args.profile is None and args.config is None and args.plan is None and not args.resume
        check_classes(args.data, None if by_rules else config_from_args(args))
        check_masks(args.data)
        with output_lock(args.out, "usseg train") if main_rank else contextlib.nullcontext(), stop_signals():
            if args.folds is not None:
                from .folds import train_folds
                return train_folds(args, budget_s, started)
            check_run_folder(args.out, args.resume, args.overwrite)
            cfg, candidates, on_fit, planned = prepare(args, started)
            if planned is not None and budget_s is not None:  # nothing chosen by hand: choose by trial on val
                from .trials import train_by_trial
                summary = train_by_trial(*planned, args.data, args.out, budget_s, started, _overrides(args),
                                         progress=not args.no_progress)
            else:
                summary = train(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
                                progress=not args.no_progress, budget_s=budget_s, candidates=candidates,
                                started=started, on_fit=on_fit)
    except ValueError as exc:
        if isinstance(exc, UssegError):
            raise
        raise UsageError(str(exc)) from None
    except WriteError as exc:
        log.error("%s", resume_hint(args.out, args.data, str(exc)))
        return EXIT_SOME_FAILED
    except KeyboardInterrupt as exc:
        how = stopped_by(exc)
        log.error("%s", resume_hint(args.out, args.data, "interrupted" if how == "Ctrl-C" else f"stopped ({how})"))
        return EXIT_CODES[how]
    best = summary["best_mean_val_dice"]
    log.info("done in %.0f s: best mean val Dice %s at epoch %s; checkpoints in %s",
             summary["total_seconds"], "-" if best is None else f"{best:.4f}",
             "-" if summary["best_epoch"] is None else summary["best_epoch"] + 1, args.out)
    if "trials" in summary:
        from .trials import summary_lines
        for line in summary_lines(summary["trials"], args.out):
            log.info("%s", line)
    if (args.out / "best.pt").is_file():
        log.info("next: usseg evaluate --model %s --data %s", args.out / "best.pt", args.data)
    else:
        log.warning("no best.pt: no validation gave a mean val Dice (is any structure present in the val "
                    "frames?); %s holds the last epoch", args.out / "last.pt")
    return 0


def end_process(code: int) -> int:
    """``code``, or for a process that took part in a multi-process run (a process group opened):
    its output flushed and the process ended at once with ``code``.

    Once a model has been wrapped in DistributedDataParallel, the process group and its threads
    stay alive until the process ends (measured with gloo on torch 2.13: destroy_process_group
    leaves them running, the wrapper deleted or not), and tearing them down with the interpreter
    can abort a worker (SIGABRT) after a run that succeeded, which torchrun then reports as a
    failed run. By this point the run folder is complete: every rank
    left the training session together (``distributed.session``) and rank 0 wrote its files
    atomically, so nothing is lost by skipping that teardown.
    """
    distributed = sys.modules.get("usseg.train.distributed")  # not imported: no group was opened
    if distributed is None or not distributed.opened_group():
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


main = alias_main("train")


if __name__ == "__main__":
    raise SystemExit(main())
