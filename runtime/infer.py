"""usseg predict: segment image files and folders with an exported model.

    usseg predict --model model.onnx IMAGES_OR_FOLDERS... --out result/ [--device auto] [--save-masks] [--spacing MM]
    usseg predict --triton localhost:8000 [--model-name usseg] IMAGES_OR_FOLDERS... --out result/

With --triton the graph runs on a Triton Inference Server (a repository written by
usseg-export --triton); pre- and post-processing still run here, as with --model.

Per image: an overlay PNG (and with --save-masks the label-mask PNG); per run: results.json with
geometry and timings. A bad file is reported and skipped; the exit code is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cli import add_device_option, add_out_option, alias_main
from .errors import EXIT_OK, EXIT_SOME_FAILED, UsageError
from .fileio import make_dirs, write_json, write_png
from .overlay import draw_overlay
from .preprocess import FrameError
from .segmenter import Segmenter
from .sources import InputError, expand_inputs, read_frames
from .triton_client import TritonSegmenter

log = logging.getLogger("usseg.infer")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders (png/jpg/tif/bmp, DICOM with pydicom)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", type=Path, metavar="PATH", help="exported .onnx model")
    where.add_argument("--triton", metavar="URL", help="a Triton server's HTTP endpoint, e.g. localhost:8000 "
                       "(needs the 'triton' extra)")
    p.add_argument("--model-name", default="usseg", help="the served model's name, with --triton (default usseg)")
    add_out_option(p, "output folder: overlays, masks, results.json")
    add_device_option(p)
    p.add_argument("--save-masks", action="store_true", help="also write the label-mask PNG per image")
    p.add_argument("--spacing", type=float, help="pixel spacing in mm: geometry in mm too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def open_segmenter(args: argparse.Namespace):
    """A local Segmenter, or with --triton a TritonSegmenter (same __call__, inference remote)."""
    if args.triton is None:
        return Segmenter(args.model, device=args.device, spacing_mm=args.spacing)
    if args.device != "auto":
        raise UsageError("--device chooses the local execution device; with --triton the server chooses it")
    return TritonSegmenter(args.triton, args.model_name, spacing_mm=args.spacing)


def infer_files(seg: Segmenter, files: list[Path], out: Path, save_masks: bool, quiet: bool = False) -> dict:
    """Segment every frame of every file; returns the results.json document."""
    records, failures = [], []
    for path in tqdm(files, desc="usseg predict", unit="img", disable=quiet):
        try:
            frames = read_frames(path)
            for n, frame in enumerate(frames):
                stem = path.stem if len(frames) == 1 else f"{path.stem}_{n:04d}"
                result = seg(frame)
                write_png(out / f"{stem}_overlay.png", draw_overlay(frame, result))
                if save_masks:
                    write_png(out / f"{stem}_mask.png", result.labels)
                records.append({"file": str(path), "frame": n, "size": list(result.labels.shape), **result.to_dict()})
        except (InputError, FrameError) as exc:
            log.error("skipped: %s", exc if str(path) in str(exc) else f"{path}: {exc}")
            failures.append({"file": str(path), "error": str(exc)})
    timing = _timing_summary(records)
    return {"model": str(seg.path), "provider": seg.provider, "classes": list(seg.contract.classes),
            "recipe": seg.contract.recipe.name, "spacing_mm": seg.spacing_mm, "frames": records,
            "failures": failures, "timings_ms_median": timing}


def _timing_summary(records: list[dict]) -> dict:
    if not records:
        return {}
    keys = records[0]["timings_ms"].keys()
    return {k: round(float(np.median([r["timings_ms"][k] for r in records])), 3) for k in keys}


def run(args: argparse.Namespace) -> int:
    if args.spacing is not None and not args.spacing > 0:
        raise UsageError(f"--spacing {args.spacing}: must be > 0 (mm per pixel)")
    files = expand_inputs(args.inputs)
    if not files:
        raise InputError(f"no input images found in {args.inputs}")
    make_dirs(args.out)
    seg = open_segmenter(args)
    doc = infer_files(seg, files, args.out, args.save_masks, quiet=args.no_progress or args.quiet > 0)
    write_json(args.out / "results.json", doc)
    t = doc["timings_ms_median"]
    print(f"usseg predict: {len(doc['frames'])} frames, {len(doc['failures'])} failed, on {seg.provider}; "
          f"median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + f"; wrote {args.out}/results.json")
    return EXIT_SOME_FAILED if doc["failures"] else EXIT_OK


main = alias_main("predict")


if __name__ == "__main__":
    raise SystemExit(main())
