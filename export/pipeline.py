"""The export pipeline: checkpoint -> ONNX model with its contract, as a short chain of steps
(load, trace, convert, verify, put the preprocessing in the graph, write, Triton), each logging
what it did and how long it took. The command line only builds :class:`ExportOptions`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from usseg.runtime.contract import OUTPUT_KINDS, Contract, ContractError, FrameSpec
from usseg.runtime.errors import WriteError
from usseg.runtime.fileio import output_lock

from .errors import ExportError
from .frames import calibration_files, calibration_frames, verification_frames
from .precisions import DEFAULT_PRECISION, PRECISIONS
from .verify import Parity, check, compare, run_onnx

log = logging.getLogger("usseg.export")


@dataclass(frozen=True)
class ExportOptions:
    checkpoint: Path
    out: Path                                   # the .onnx file to write
    precision: str = DEFAULT_PRECISION          # a key of PRECISIONS
    output: str = "logits"                      # logits | probs | labels
    batch: int | None = 1                       # None: dynamic
    opset: int = 18
    graph_preprocess: tuple[int, int] | None = None  # raw uint8 frame size (H, W) for in-graph preprocessing
    calibration: Path | None = None             # int8: a mask folder or image folder
    frames: Path | None = None                  # verification frames; None: phantom frames
    triton: Path | None = None                  # also write a Triton model repository here
    verify: bool = True
    ensemble: bool = False                      # checkpoint is a `usseg train --folds K` run folder

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportError(f"precision {self.precision!r}; valid: {list(PRECISIONS)}")
        if self.output not in OUTPUT_KINDS:
            raise ExportError(f"output {self.output!r}; valid: {list(OUTPUT_KINDS)}")
        if self.out.suffix != ".onnx":
            raise ExportError(f"{self.out}: the model file must end in .onnx")
        if not 7 <= self.opset <= 23:
            raise ExportError(f"opset {self.opset}: must be between 7 and 23")


def check_inputs(opts: ExportOptions) -> None:
    """Everything that can be refused before minutes of tracing."""
    precision = PRECISIONS[opts.precision]
    if opts.ensemble:
        from .ensemble import fold_checkpoints

        fold_checkpoints(opts.checkpoint)
    elif not opts.checkpoint.is_file():
        raise ExportError(f"{opts.checkpoint}: checkpoint not found")
    if precision.needs_calibration:
        if opts.calibration is None:
            raise ExportError(f"{precision.flag} needs --calibration DIR (a mask folder or an image folder "
                              f"of training frames)")
        calibration_files(opts.calibration)
    if opts.frames is not None and not opts.frames.is_dir():
        raise ExportError(f"--frames {opts.frames}: not a folder")
    if opts.graph_preprocess and opts.triton is not None:
        raise ExportError("--graph-preprocess and --triton cannot be combined yet: the Triton repository "
                          "expects the float32 model input")
    if opts.out.is_dir():
        raise ExportError(f"{opts.out}: is a folder; the model file must end in .onnx")
    parent = opts.out.parent.absolute()  # made when the export starts (its output lock), not here
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise ExportError(f"{opts.out}: cannot create the output folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"{opts.out}: the output folder {existing} is not writable")


def load(opts: ExportOptions):
    """(model, contract) from the checkpoint, the contract updated for this export."""
    from usseg.train.checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint

    try:
        if opts.ensemble:
            from .ensemble import load_ensemble

            model, contract = load_ensemble(opts.checkpoint)
        else:
            state = load_checkpoint(opts.checkpoint)
            model = model_from_checkpoint(state, opts.checkpoint)
            contract = checkpoint_contract(state, opts.checkpoint)
    except ContractError as exc:
        raise ExportError(f"{opts.checkpoint}: {exc}") from None
    try:
        frame = None if not opts.graph_preprocess else FrameSpec(height=opts.graph_preprocess[0],
                                                                  width=opts.graph_preprocess[1])
        contract = replace(contract, frame=frame)
    except ContractError as exc:
        raise ExportError(f"--graph-preprocess: {exc}") from None
    if frame is not None:
        from .graph_model import GraphPreprocessError, check_graph_preprocessing

        try:
            check_graph_preprocessing(contract, opts.opset)
        except GraphPreprocessError as exc:
            raise ExportError(f"--graph-preprocess: {exc}") from None
    contract = replace(
        contract, output=opts.output, input=replace(contract.input, batch=opts.batch),
        provenance={**contract.provenance, "precision": opts.precision, "opset": opts.opset,
                    "checkpoint": opts.checkpoint.name,
                    "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    return model, contract


def export(opts: ExportOptions) -> dict:
    """Run the pipeline; returns the figures the summary prints. One export at a time writes into
    the model's folder and the Triton repository (their output locks, taken once the inputs are
    checked). A write that fails (a full disk) raises WriteError naming the model file; nothing
    half-written is left, and a previous model file stays as it was."""
    start = time.perf_counter()
    check_inputs(opts)
    with ExitStack() as locks:
        for folder in (opts.out.parent, opts.triton):
            if folder is not None:
                locks.enter_context(output_lock(folder, "usseg export"))
        figures = _export(opts)
    figures["seconds"] = time.perf_counter() - start
    return figures


def _export(opts: ExportOptions) -> dict:
    model, contract = load(opts)
    figures: dict = {"precision": opts.precision, "contract": contract}
    try:
        _write_model(opts, model, contract, figures)
    except OSError as exc:
        raise WriteError.of(opts.out, exc, "the model") from None
    if opts.triton is not None:
        from .triton import write_repository

        try:
            figures["triton"] = write_repository(opts.out, contract, opts.triton)
        except OSError as exc:
            raise WriteError.of(opts.triton, exc, "the Triton repository") from None
    return figures


def _write_model(opts: ExportOptions, model, contract: Contract, figures: dict) -> None:
    """Trace, convert, verify and (with --graph-preprocess) extend the model in a temporary folder
    beside ``opts.out``, then move it into place."""
    from .convert import convert_fp16, export_fp32, quantize_int8

    with tempfile.TemporaryDirectory(dir=opts.out.parent, prefix=".usseg-export-") as work:
        fp32_path = Path(work) / "fp32.onnx"
        fp32_contract = replace(contract, provenance={**contract.provenance, "precision": "fp32"})
        with _step("ONNX fp32 traced and checked"):
            export_fp32(model, fp32_contract, fp32_path, opts.opset)
        staged = fp32_path
        if opts.precision != "fp32":
            staged = Path(work) / "model.onnx"
            with _step(f"{opts.precision} conversion done"):
                if opts.precision == "fp16":
                    convert_fp16(fp32_path, staged, contract)
                else:
                    quantize_int8(fp32_path, staged, contract, calibration_frames(opts.calibration, contract))
        if opts.verify:
            figures["parity"] = verify_model(model, staged, fp32_path, contract, opts.precision, opts.frames)
        if opts.ensemble:
            from .ensemble import frame_cost_ms

            figures["ensemble"] = {"folds": len(model.folds), "ms_per_frame": frame_cost_ms(staged, contract)}
        if contract.frame is not None:
            staged = _prepend_preprocessing(staged, Path(work) / "graph.onnx", contract, opts, figures)
        os.replace(staged, opts.out)


def _prepend_preprocessing(network: Path, staged: Path, contract: Contract, opts: ExportOptions,
                           figures: dict) -> Path:
    from .graph_model import GraphPreprocessError, prepend_preprocessing, verify_graph_preprocessing

    with _step("preprocessing put into the graph"):
        try:
            prepend_preprocessing(network, staged, contract)
        except GraphPreprocessError as exc:
            raise ExportError(f"--graph-preprocess: {exc}") from None
    if opts.verify:
        figures["graph_parity"] = verify_graph_preprocessing(staged, network, contract, opts.frames)
    return staged


class _step:
    """Logs ``<what> in 1.2 s`` when the block ends without an error."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            log.info("%s in %.1f s", self.what, time.perf_counter() - self.start)


def verify_model(model, path: Path, fp32_path: Path, contract: Contract, name: str, frames_dir: Path | None) -> Parity:
    """fp32 against the PyTorch checkpoint; fp16/int8 against the fp32 model; on the same frames."""
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
