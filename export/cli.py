"""usseg export: the best checkpoint -> a deployable ONNX model that carries its own contract.

    usseg export --model runs/demo/run/best.pt --out models/ [--fp16 | --int8 --calibration DATA]
                 [--output logits|probs|labels] [--batch 1|dynamic] [--opset 18]
                 [--graph-preprocess HxW] [--triton REPO] [--frames DIR] [--no-verify]
    usseg export --model RUN --ensemble --out models/      # the K folds of `usseg train --folds K` as one graph
    usseg-export runs/demo/run/best.pt -o model.onnx            # the stand-alone form, same options

``--out DIR`` writes DIR/model.onnx (model-fp16.onnx, model-int8.onnx; ``--name`` to choose);
an ``--out`` ending in .onnx is taken as the file itself. With ``--graph-preprocess 480x640`` the
recipe and the letterbox resize become part of the graph, which then takes raw uint8 frames of
that size (see usseg.runtime.recipe.graph).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usseg.runtime.cli import add_model_option, alias_main, output_folder
from usseg.runtime.contract import OUTPUT_KINDS
from usseg.runtime.errors import UsageError

from .errors import ExportError, VerificationError  # noqa: F401  (kept importable from here)
from .pipeline import ExportOptions, export
from .precisions import DEFAULT_PRECISION, PRECISIONS
from .report import summary


def frame_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 480x640") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: frames must be at least 8x8")
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, nargs="?", help=argparse.SUPPRESS)  # usseg-export CHECKPOINT -o FILE
    add_model_option(p, "the checkpoint to export, e.g. runs/demo/run/best.pt", required=False)
    p.add_argument("-o", "--out", type=output_folder, required=True, metavar="DIR",
                   help="output folder (or a file name ending in .onnx)")
    p.add_argument("--name", help="file name in --out (default: model.onnx, model-fp16.onnx, model-int8.onnx)")
    prec = p.add_mutually_exclusive_group()
    for precision in PRECISIONS.values():  # the precision table is the one source of these flags
        if precision.name != DEFAULT_PRECISION:
            prec.add_argument(precision.flag, dest="precision", action="store_const", const=precision.name,
                              help=precision.description)
    p.set_defaults(precision=DEFAULT_PRECISION)
    p.add_argument("--calibration", type=Path,
                   help="int8 calibration data: a mask folder (train split) or an image folder")
    p.add_argument("--output", choices=OUTPUT_KINDS, default="logits", help="what the graph outputs (default logits)")
    p.add_argument("--batch", choices=("1", "dynamic"), default="1", help="fixed batch of 1 (default) or dynamic")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--graph-preprocess", metavar="HxW", type=frame_size,
                   help="put the preprocessing into the graph, fed raw uint8 frames of this size (e.g. 480x640)")
    p.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    p.add_argument("--frames", type=Path,
                   help="verification frames (image folder or mask folder); default: phantom frames")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check")
    p.add_argument("--ensemble", action="store_true",
                   help="--model is the folder of a `usseg train --folds K` run: export its K fold models as one "
                        "graph that averages their probabilities (K forward passes per frame; the summary gives "
                        "the cost measured on this CPU)")


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    if (args.checkpoint is None) == (args.model is None):
        raise UsageError("give the checkpoint once: --model CHECKPOINT (or as the first argument)")
    out: Path = args.out
    if out.suffix != ".onnx" and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder (give a folder, or a file name ending in .onnx)")
    if out.suffix != ".onnx":
        out = out / (args.name or PRECISIONS[args.precision].file_name)
    elif args.name:
        raise UsageError("--name goes with an --out folder, not with an --out file")
    return ExportOptions(
        checkpoint=args.model or args.checkpoint, out=out, precision=args.precision, output=args.output,
        batch=None if args.batch == "dynamic" else 1, opset=args.opset, graph_preprocess=args.graph_preprocess,
        calibration=args.calibration, frames=args.frames, triton=args.triton, verify=not args.no_verify,
        ensemble=args.ensemble)


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    figures = export(opts)
    print(summary(opts.out, figures))
    return 0


main = alias_main("export")


if __name__ == "__main__":
    sys.exit(main())
