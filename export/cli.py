"""usseg-export: the best checkpoint -> a deployable ONNX model that carries its own contract.

    usseg-export runs/demo/best.pt -o model.onnx [--fp16 | --int8 --calibration DATA] [--output logits|probs|labels]
                 [--batch 1|dynamic] [--opset 18] [--graph-preprocess HxW] [--triton REPO]
                 [--frames DIR] [--no-verify]

With ``--graph-preprocess 480x640`` the recipe and the letterbox resize become part of the graph,
which then takes raw uint8 frames of that size (see usseg.export.recipe_graph).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from usseg.runtime.contract import Contract, ContractError, FrameSpec
from usseg.runtime.errors import UssegError

from .frames import calibration_frames, verification_frames
from .precisions import OUTPUT_KINDS, PRECISIONS
from .report import summary
from .verify import Parity, VerificationError, check, compare, run_onnx

log = logging.getLogger("usseg.export")


class ExportError(UssegError, RuntimeError):
    """Export cannot go on: the message says which input is wrong."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usseg-export", description="Export a usseg checkpoint to ONNX.")
    p.add_argument("checkpoint", type=Path, help="a usseg checkpoint, e.g. runs/demo/best.pt")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="float16 model (input/output stay float32)")
    prec.add_argument("--int8", action="store_true", help="static QDQ int8 model (needs --calibration)")
    p.add_argument("--calibration", type=Path, help="int8 calibration data: a mask folder (train split) or an image folder")
    p.add_argument("--output", choices=OUTPUT_KINDS, default="logits", help="what the graph outputs (default logits)")
    p.add_argument("--batch", choices=("1", "dynamic"), default="1", help="fixed batch of 1 (default) or dynamic")
    p.add_argument("--graph-preprocess", metavar="HxW", type=frame_size,
                   help="put the preprocessing into the graph, fed raw uint8 frames of this size (e.g. 480x640)")
    p.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    p.add_argument("--frames", type=Path, help="verification frames (image folder or mask folder); default: phantom frames")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check")
    return p


def frame_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 480x640") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: frames must be at least 8x8")
    return h, w


def precision_name(args: argparse.Namespace) -> str:
    return "fp16" if args.fp16 else "int8" if args.int8 else "fp32"


def check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the output file must end in .onnx")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{out}: the output folder {parent} is not writable")


def export(args: argparse.Namespace) -> dict:
    """Run the export pipeline; returns the figures the summary prints."""
    from usseg.train.checkpoint import (
        checkpoint_contract,
        load_checkpoint,
        model_from_checkpoint,
    )
    from usseg.train.io import DataError

    from .convert import convert_fp16, export_fp32, quantize_int8

    start = time.perf_counter()
    name = precision_name(args)
    precision = PRECISIONS[name]
    if precision.needs_calibration and args.calibration is None:
        raise ExportError("--int8 needs --calibration DIR (a mask folder or an image folder of training frames)")
    check_writable(args.out)
    if args.graph_preprocess and args.triton is not None:
        raise ExportError("--graph-preprocess and --triton cannot be combined yet: the Triton repository "
                          "expects the float32 model input")
    try:
        state = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(state, args.checkpoint)
        contract = checkpoint_contract(state, args.checkpoint)
    except DataError as exc:
        raise ExportError(str(exc)) from None
    frame = None if not args.graph_preprocess else FrameSpec(height=args.graph_preprocess[0],
                                                              width=args.graph_preprocess[1])
    try:
        contract = replace(contract, frame=frame)
    except ContractError as exc:
        raise ExportError(f"--graph-preprocess: {exc}") from None
    if frame is not None:
        from .graph_model import GraphPreprocessError, check_graph_preprocessing

        try:  # before minutes of tracing and verification
            check_graph_preprocessing(contract, args.opset)
        except GraphPreprocessError as exc:
            raise ExportError(f"--graph-preprocess: {exc}") from None
    contract = replace(
        contract, output=args.output,
        input=replace(contract.input, batch=None if args.batch == "dynamic" else 1),
        provenance={**contract.provenance, "precision": name, "opset": args.opset,
                    "checkpoint": args.checkpoint.name,
                    "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    figures: dict = {"precision": name, "contract": contract}
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".usseg-export-") as work:
        fp32_path = Path(work) / "fp32.onnx"
        fp32_contract = replace(contract, provenance={**contract.provenance, "precision": "fp32"})
        t = time.perf_counter()
        export_fp32(model, fp32_contract, fp32_path, args.opset)
        log.info("ONNX fp32 traced and checked in %.1f s", time.perf_counter() - t)
        if name != "fp32":
            t = time.perf_counter()
            staged = Path(work) / "model.onnx"
            if name == "fp16":
                convert_fp16(fp32_path, staged, contract)
            else:
                quantize_int8(fp32_path, staged, contract, calibration_frames(args.calibration, contract))
            log.info("%s conversion done in %.1f s", name, time.perf_counter() - t)
        else:
            staged = fp32_path
        if not args.no_verify:
            figures["parity"] = verify_model(model, staged, fp32_path, contract, name, args.frames)
        if frame is not None:
            from .graph_model import prepend_preprocessing, verify_graph_preprocessing

            network = staged
            staged = Path(work) / "graph.onnx"
            t = time.perf_counter()
            try:
                prepend_preprocessing(network, staged, contract)
            except GraphPreprocessError as exc:
                raise ExportError(f"--graph-preprocess: {exc}") from None
            log.info("preprocessing put into the graph in %.1f s", time.perf_counter() - t)
            if not args.no_verify:
                figures["graph_parity"] = verify_graph_preprocessing(staged, network, contract, args.frames)
        os.replace(staged, args.out)
    if args.triton is not None:
        from .triton import write_repository

        figures["triton"] = write_repository(args.out, contract, args.triton)
    figures["seconds"] = time.perf_counter() - start
    return figures


def verify_model(model, path: Path, fp32_path: Path, contract: Contract, name: str, frames_dir: Path | None) -> Parity:
    import torch

    from .convert import OutputHead

    batch = verification_frames(frames_dir, contract)
    precision = PRECISIONS[name]
    if name == "fp32":
        with torch.no_grad():
            reference = OutputHead(model, contract.output)(torch.from_numpy(batch)).numpy()
        ref_name = "pytorch"
    else:
        reference = run_onnx(str(fp32_path), batch, contract)
        ref_name = "fp32"
    parity = compare(run_onnx(str(path), batch, contract), reference, contract.output, contract.num_classes, ref_name)
    check(parity, name, precision.min_label_agreement, precision.min_dice_vs_fp32)
    return parity


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        figures = export(args)
    except (ExportError, VerificationError) as exc:
        log.error("usseg-export: %s", exc)
        return 1
    print(summary(args.out, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
