"""usseg predict: segment image files and folders with an exported model.

    usseg predict --model model.onnx IMAGES_OR_FOLDERS... --out result/ [--device auto] [--save-masks] [--spacing MM]
    usseg predict --triton localhost:8000 [--model-name usseg] IMAGES_OR_FOLDERS... --out result/

With --triton the graph runs on a Triton Inference Server (a repository written by
usseg-export --triton); pre- and post-processing still run here, as with --model.

Per image: an overlay PNG (and with --save-masks the label-mask PNG); per run: results.json with
geometry, readouts, the spacing used and where it came from (--spacing, else a DICOM file's own),
timings and provenance (README: results.json).
A bad file (unreadable, over --max-pixels, one that runs out of memory) is reported and skipped;
the exit code is 1 when any file failed. Ctrl-C and SIGTERM stop after the current file and still
write results.json.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .cli import add_device_option, add_engine_options, add_out_option, alias_main, os_error_message
from .dicom import calibration_for
from .errors import EXIT_OK, EXIT_SOME_FAILED, UsageError
from .fileio import output_lock, write_json, write_png
from .imageio import DEFAULT_MAX_PIXELS, add_max_pixels_option, check_model_file
from .interrupt import EXIT_CODES, stop_point, stop_signals, stopped_by
from .overlay import draw_overlay
from .preprocess import FrameError
from .provenance import provenance
from .segmenter import Segmenter
from .sources import InputError, expand_inputs, read_frames
from .triton_client import TritonSegmenter

log = logging.getLogger("usseg.infer")

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders (png/jpg/tif/bmp, DICOM with pydicom)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", type=Path, metavar="PATH", help="exported .onnx model")
    where.add_argument("--triton", metavar="URL", help="a Triton server's HTTP endpoint, e.g. localhost:8000 "
                       "(needs the 'triton' extra)")
    p.add_argument("--model-name", default="usseg", help="the served model's name, with --triton (default usseg)")
    add_out_option(p, "output folder: overlays, masks, results.json")
    add_device_option(p)
    add_engine_options(p)
    p.add_argument("--save-masks", action="store_true", help="also write the label-mask PNG per image")
    p.add_argument("--spacing", type=float, help="pixel spacing in mm: geometry in mm too")
    add_max_pixels_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def open_segmenter(args: argparse.Namespace):
    """A local Segmenter, or with --triton a TritonSegmenter (same __call__, inference remote)."""
    if args.triton is None:
        return Segmenter(args.model, device=args.device, spacing_mm=args.spacing, preprocess=args.preprocess,
                         flip_tta=args.tta)
    if args.tta or args.preprocess != "auto":
        raise UsageError("--tta and --preprocess choose how the local model runs; with --triton the server runs it")
    if args.device != "auto":
        raise UsageError("--device chooses the local execution device; with --triton the server chooses it")
    return TritonSegmenter(args.triton, args.model_name, spacing_mm=args.spacing)


class OutputNames:
    """Every input its own output files in the flat --out folder: the input's stem, or ``stem-2``,
    ``stem-3``... when an earlier input of the run already took it (``a/x.png b/x.png a/x.jpg``).
    Names are compared case-folded (a case-blind disk would merge ``X`` and ``x``), and the names
    of inputs that lie in --out itself are never taken, so no input is overwritten."""

    KINDS = ("_overlay.png", "_mask.png")

    def __init__(self, out: Path, inputs: list[Path]) -> None:
        folder = os.path.realpath(out)
        self.taken = {"results.json"} | {p.name.casefold() for p in inputs
                                          if os.path.dirname(os.path.realpath(p)) == folder}

    def claim(self, path: Path, frames: int) -> list[str]:
        """The stems of one file's frames (``stem`` for one frame, ``stem_0000``... for a cine)."""
        for n in itertools.count(1):
            stem = path.stem if n == 1 else f"{path.stem}-{n}"
            stems = [stem] if frames == 1 else [f"{stem}_{i:04d}" for i in range(frames)]
            names = {f"{s}{kind}".casefold() for s in stems for kind in self.KINDS}
            if not names & self.taken:
                self.taken |= names
                return stems
        raise AssertionError("unreachable")


def infer_files(seg: Segmenter, files: list[Path], out: Path, save_masks: bool, quiet: bool = False,
                failures: list[dict] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Segment every frame of every file; returns the results.json document. A file that cannot
    be read, segmented or written, or that runs out of memory, is a failure of that file alone:
    reported, listed, skipped. Ctrl-C or SIGTERM ends the loop (SIGTERM between frames, under
    stop_signals(deferred=True)); what is done is still returned (``interrupted`` names the signal)."""
    records: list[dict] = []
    failures = list(failures or [])
    outputs: dict[str, list[str]] = {}
    names = OutputNames(out, files)
    interrupted = None
    try:
        for index, path in enumerate(tqdm(files, desc="usseg predict", unit="img", disable=quiet)):
            stop_point()
            try:
                frames = read_frames(path, max_pixels)
                calibration = calibration_for(seg.spacing_mm, path)
                written: list[str] = []
                for n, (stem, frame) in enumerate(zip(names.claim(path, len(frames)), frames)):
                    if n:  # a stop between the frames of a cine lists the frames done with their files
                        outputs[str(path)] = written
                        stop_point()
                    result = calibration.apply(seg(frame))
                    files_of_frame = {"overlay": f"{stem}_overlay.png"}
                    write_png(out / files_of_frame["overlay"], draw_overlay(frame, result))
                    if save_masks:
                        files_of_frame["mask"] = f"{stem}_mask.png"
                        write_png(out / files_of_frame["mask"], result.labels)
                    written += files_of_frame.values()
                    records.append({"file": str(path), "frame": n, **files_of_frame,
                                    "size": list(result.labels.shape), "spacing_mm": calibration.spacing_mm,
                                    "spacing_source": calibration.spacing_source, **result.to_dict()})
                outputs[str(path)] = written
            except (InputError, FrameError, OSError, MemoryError, cv2.error) as exc:
                message = _failure_message(exc)
                message = message if str(path) in message else f"{path}: {message}"
                log.error("skipped: %s", message)
                failures.append({"file": str(path), "error": message})
                if getattr(exc, "errno", None) in DISK_FULL:  # every later output would fail alike
                    rest = files[index + 1:]
                    log.error("the disk is full: stopping; %d files after %s not segmented", len(rest), path)
                    failures += [{"file": str(p), "error": f"{p}: not segmented: the disk was full"} for p in rest]
                    break
    except KeyboardInterrupt as exc:
        interrupted = stopped_by(exc)  # what is done so far is still reported
    timing = _timing_summary(records)
    doc = {"model": str(seg.path), "provider": seg.provider, "classes": list(seg.contract.classes),
           "recipe": seg.contract.recipe.name, "spacing_mm": seg.spacing_mm, "provenance": provenance(seg),
           "frames": records,
           "failures": failures, "outputs": outputs, "timings_ms_median": timing}
    if interrupted:
        doc["interrupted"] = True
        doc["stopped_by"] = interrupted
    return doc


def _failure_message(exc: BaseException) -> str:
    """One line for a file that failed; memory and OpenCV errors said plainly (the file is named
    by the caller when the message does not name it)."""
    if isinstance(exc, MemoryError) or (isinstance(exc, cv2.error) and exc.code == cv2.Error.StsNoMem):
        return "out of memory while segmenting it (a smaller --max-pixels refuses such frames up front)"
    if isinstance(exc, cv2.error):
        return f"OpenCV could not process it ({str(exc).strip().splitlines()[-1][:200]})"
    return os_error_message(exc) if isinstance(exc, OSError) else str(exc)


def _timing_summary(records: list[dict]) -> dict:
    if not records:
        return {}
    keys = records[0]["timings_ms"].keys()
    return {k: round(float(np.median([r["timings_ms"][k] for r in records])), 3) for k in keys}


def run(args: argparse.Namespace) -> int:
    check_model_file(args.model)
    if args.spacing is not None and not (math.isfinite(args.spacing) and args.spacing > 0):
        raise UsageError(f"--spacing {args.spacing}: must be a number > 0 (mm per pixel)")
    unlisted: list[tuple[str, str]] = []
    files = expand_inputs(args.inputs, errors=unlisted)
    if not files:
        reasons = "; ".join(message for _, message in unlisted)
        raise InputError(f"no input images found in {args.inputs}" + (f" ({reasons})" if reasons else ""))
    for _, message in unlisted:
        log.error("skipped: %s", message)
    with output_lock(args.out, "usseg predict"), stop_signals(deferred=True):
        seg = open_segmenter(args)
        doc = infer_files(seg, files, args.out, args.save_masks, quiet=args.no_progress or args.quiet > 0,
                          failures=[{"file": item, "error": message} for item, message in unlisted],
                          max_pixels=args.max_pixels)
        write_json(args.out / "results.json", doc)
    if doc.get("interrupted"):
        log.error("stopped (%s) after %d frames; wrote %s; run the files not listed in it again to finish",
                  doc["stopped_by"], len(doc["frames"]), args.out / "results.json")
        return EXIT_CODES[doc["stopped_by"]]
    t = doc["timings_ms_median"]
    print(f"usseg predict: {len(doc['frames'])} frames, {len(doc['failures'])} failed, on {seg.provider}; "
          f"median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + f"; wrote {args.out}/results.json")
    return EXIT_SOME_FAILED if doc["failures"] else EXIT_OK


main = alias_main("predict")


if __name__ == "__main__":
    raise SystemExit(main())
