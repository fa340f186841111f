"""usseg-train: train a segmentation model on a mask folder (see usseg-prepare).

    usseg-train --data DIR --out RUN [--profile demo|seed|tiny] [--config FILE] [--epochs N]
                [--batch-size N] [--device auto|cpu|cuda] [--seed S] [--resume | --overwrite]

The configuration is the profile, then the --config file, then the flags given here. With
--resume and neither --profile nor --config, the run's own RUN/config.json is the base.

On many processes, unchanged: ``torchrun --nproc-per-node N -m usseg.train.train_cli ...``
(see usseg.train.distributed). Only rank 0 logs progress; the others log warnings and errors,
marked with their rank.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import DEVICES, PROFILES, TrainConfig, resolve_config
from .io import DataError

log = logging.getLogger("usseg.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usseg-train", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="mask folder (images/, masks/, split.csv, classes.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.json, tb/")
    p.add_argument("--profile", choices=sorted(PROFILES), help="base configuration (default: demo)")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields, applied over the profile")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--seed", type=int)
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue RUN/last.pt at the next epoch")
    run.add_argument("--overwrite", action="store_true", help="replace a previous run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device, "seed": args.seed}
    own = args.out / "config.json"
    if args.resume and args.profile is None and args.config is None and own.is_file():
        return resolve_config(PROFILES["demo"], own, overrides)
    return resolve_config(args.profile or "demo", args.config, overrides)


def setup_logging() -> None:
    """INFO on rank 0 (or a plain run), warnings and errors only on the other torchrun ranks."""
    rank = os.environ.get("RANK", "0")
    if rank == "0":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s rank {rank} %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        # torch and MONAI load here, after the arguments are checked
        from .loop import train

        cfg = config_from_args(args)
        summary = train(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=not args.no_progress)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    best = summary["best_mean_val_dice"]
    log.info("done in %.0f s: best mean val Dice %s at epoch %s; checkpoints in %s",
             summary["total_seconds"], "-" if best is None else f"{best:.4f}",
             "-" if summary["best_epoch"] is None else summary["best_epoch"] + 1, args.out)
    log.info("next: usseg-evaluate --model %s --data %s", args.out / "best.pt", args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
