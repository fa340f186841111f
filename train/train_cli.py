"""usseg train: train a segmentation model on a mask folder (see usseg prepare).

    usseg train --data DIR --out RUN [--profile demo|seed|tiny] [--config FILE] [--epochs N]
                [--batch-size N] [--device auto|cpu|cuda|cuda:N] [--seed S] [--resume | --overwrite]

The configuration is the profile, then the --config file, then the flags given here. With
--resume and neither --profile nor --config, the run's own RUN/config.json is the base.

On many processes, unchanged: ``torchrun --nproc-per-node N -m usseg.train.train_cli ...``
(see usseg.train.distributed). Only rank 0 logs progress; the others log warnings and errors,
marked with their rank.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from usseg.runtime.cli import add_device_option, add_out_option, alias_main
from usseg.runtime.errors import UsageError, UssegError

from .config import DEVICES, PROFILES, TrainConfig, resolve_config

log = logging.getLogger("usseg.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="mask folder (images/, masks/, split.csv, classes.json)")
    add_out_option(p, "run folder: checkpoints, config.json, metrics.json, tb/")
    p.add_argument("--profile", choices=sorted(PROFILES), help="base configuration (default: demo)")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields, applied over the profile")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    add_device_option(p, allowed=DEVICES)
    p.add_argument("--seed", type=int)
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue RUN/last.pt at the next epoch")
    run.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device, "seed": args.seed}
    own = args.out / "config.json"
    if args.resume and args.profile is None and args.config is None and own.is_file():
        return resolve_config(PROFILES["demo"], own, overrides)
    return resolve_config(args.profile or "demo", args.config, overrides)


def run(args: argparse.Namespace) -> int:
    # torch and MONAI load here, after the arguments are checked
    from .loop import train

    try:  # a configuration that makes no sense here (a field, a device): one line, exit code 2
        cfg = config_from_args(args)
        summary = train(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress)
    except ValueError as exc:
        if isinstance(exc, UssegError):
            raise
        raise UsageError(str(exc)) from None
    best = summary["best_mean_val_dice"]
    log.info("done in %.0f s: best mean val Dice %s at epoch %s; checkpoints in %s",
             summary["total_seconds"], "-" if best is None else f"{best:.4f}",
             "-" if summary["best_epoch"] is None else summary["best_epoch"] + 1, args.out)
    log.info("next: usseg evaluate --model %s --data %s", args.out / "best.pt", args.data)
    return 0


main = alias_main("train")


if __name__ == "__main__":
    raise SystemExit(main())
