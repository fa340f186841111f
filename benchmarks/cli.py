"""usseg bench: usseg against the seed-style pipeline on this machine, like for like, on trained weights.

    usseg bench [--model M] [--device auto|cpu|cuda] [--out DIR] [--quick] [-k EXPR]

Trains the benchmark models once (cached in OUT/models; --model times a given one instead),
then times them in interleaved groups and writes OUT/benchmark.json, OUT/benchmark.md and
OUT/benchmark.png. --quick: tiny models at small sizes and 30 rounds, for CI and the demo.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from usseg.runtime.cli import add_device_option, add_model_option, add_out_option, alias_main
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import make_dirs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, "a trained checkpoint (.pt: seed-style and usseg rows) or an exported model (.onnx: usseg "
                        "rows only) to time instead of the models the benchmark trains", required=False)
    add_device_option(p, allowed=("auto", "cpu", "cuda"))
    add_out_option(p, "output folder: benchmark.json, benchmark.md, benchmark.png; models/ caches the trained "
                      "models", default=Path("runs/bench"))
    p.add_argument("--quick", action="store_true", help="tiny models at small sizes, 30 rounds: CI-sized")
    p.add_argument("-k", dest="select", help="pytest -k expression to run a subset (e.g. 'end_to_end and not batch')")


def command_line(args: argparse.Namespace) -> str:
    """The command as the report prints it."""
    parts = ["usseg", "bench", "--out", str(args.out)]
    if args.quick:
        parts.append("--quick")
    if args.model is not None:
        parts += ["--model", str(args.model)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.select:
        parts += ["-k", args.select]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from .plan import resolve_device
    from .runner import run_bench

    if args.model is not None and (not args.model.is_file() or args.model.suffix not in (".pt", ".onnx")):
        raise UsageError(f"--model {args.model}: expected an existing .pt checkpoint or .onnx model")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    make_dirs(args.out)
    return run_bench(args.out, model=args.model, device=device, quick=args.quick, select=args.select,
                     command=command_line(args))


main = alias_main("bench")


if __name__ == "__main__":
    sys.exit(main())
