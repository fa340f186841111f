"""usseg extract: frames of a probe recording as PNG files to label.

    usseg extract --source sweep.mp4 --every 5 --out frames
    usseg extract --source cine.dcm --out frames            # frames/extract.json keeps the DICOM spacing
    usseg extract --source 0 --every 10 --count 50 --out frames   # a camera / frame grabber

Any source ``usseg stream`` takes (video file, camera index, DICOM cine, image folder or glob).
Every Nth frame is written as ``OUT/<source>_<frame>.png`` (frame = its index in the source, six
digits), as the source gives it (grey or colour, 8 or 16 bit); ``OUT/extract.json`` lists the
files with their frame index and time, and the source's pixel spacing (a DICOM file's, with where
it came from) so that it can be given to ``usseg evaluate --spacing`` after labelling. The folder
is written whole: a stream that ends early (Ctrl-C, SIGTERM, a camera that stops) keeps the
frames written so far.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from .cli import add_out_option, alias_main
from .dicom import calibration, is_dicom_path, read_info
from .errors import UsageError
from .fileio import output_lock, replace_dir, write_json, write_png
from .interrupt import stop_signals, stopped_by
from .outfolder import check_out
from .preprocess import FrameError, to_grey8
from .sources import InputError, SourceError, open_source

log = logging.getLogger("usseg.extract")

MANIFEST = "extract.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="video file, camera index (0), DICOM file or cine, image folder or glob")
    p.add_argument("--every", type=int, default=1, metavar="N", help="keep every Nth frame (default 1: all)")
    p.add_argument("--count", type=int, metavar="N", help="stop after N frames written (a camera has no end)")
    add_out_option(p, "folder for the PNG frames and extract.json")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that usseg extract wrote")


def source_name(source: str) -> str:
    """The files' prefix: the source's file name without its suffix ("camera0" for a camera), kept
    to letters, digits, '-' and '_' so that every frame name is a plain id for usseg prepare."""
    stem = f"camera{source}" if source.isdigit() else Path(source).stem if Path(source).suffix else Path(source).name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "frames"


def storable(image: np.ndarray) -> np.ndarray:
    """The frame as a PNG can hold it: 8- or 16-bit grey, BGR or BGRA as given; anything else to
    8-bit grey by the runtime's rule."""
    if image.dtype in (np.uint8, np.uint16) and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        return image
    return to_grey8(image)


def spacing_of(source: str) -> dict:
    """What the source says about its pixel spacing: a DICOM file's header, else nothing."""
    if not is_dicom_path(source):
        return {"spacing_mm": None, "spacing_source": "none"}
    info = read_info(source)
    cal = calibration(None, info, source)
    return {"spacing_mm": cal.spacing_mm, "spacing_source": cal.spacing_source,
            "spacing_mm_row_col": list(info.spacing_mm) if info.spacing_mm else None, "skin_y": cal.skin_y}


def run(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise UsageError(f"--every {args.every}: must be 1 or more")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count {args.count}: must be 1 or more")
    inputs = {} if args.source.isdigit() or any(c in args.source for c in "*?[") else {"source": Path(args.source)}
    check_out(args.out, inputs, args.overwrite, own=(MANIFEST,), what="frame folder", writer="usseg extract")
    spacing = spacing_of(args.source)
    source = open_source(args.source)
    prefix = source_name(args.source)
    written, failed, ended_by = [], 0, "end of source"
    with output_lock(args.out, "usseg extract"), replace_dir(args.out) as tmp:
        try:
            with stop_signals():
                start = None
                for frame in source.frames():
                    start = frame.captured if start is None else start
                    if frame.index % args.every:
                        continue
                    if frame.image is None:
                        failed += 1
                        log.warning("frame %d: %s", frame.index, frame.error)
                        continue
                    try:
                        name = f"{prefix}_{frame.index:06d}.png"
                        write_png(tmp / name, storable(frame.image))
                    except FrameError as exc:
                        failed += 1
                        log.warning("frame %d: %s", frame.index, exc)
                        continue
                    time_s = frame.index / source.fps if source.fps else round(frame.captured - start, 4)
                    written.append({"file": name, "frame": frame.index, "time_s": round(time_s, 4)})
                    if args.count is not None and len(written) >= args.count:
                        ended_by = f"--count {args.count}"
                        break
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what was written
            ended_by = stopped_by(exc)
        except SourceError as exc:
            ended_by, failed = f"source error: {exc}", failed + 1
            log.error("%s", exc)
        finally:
            source.close()
        if not written:
            raise InputError(f"{args.source}: no frame could be written ({ended_by})")
        write_json(tmp / MANIFEST, {"source": str(args.source), "every": args.every, "fps": source.fps,
                                    **spacing, "ended_by": ended_by, "failed": failed, "frames": written})
    print(f"wrote {len(written)} frames of {args.source} to {args.out} (every {args.every}; {ended_by}"
          + (f"; {failed} failed" if failed else "") + ")")
    if spacing["spacing_mm"] is not None:
        print(f"pixel spacing {spacing['spacing_mm']:.4g} mm ({spacing['spacing_source']}), kept in "
              f"{args.out / MANIFEST}")
    print(f"next: label them, then usseg prepare --from FORMAT --annotations EXPORT --images {args.out} --out data")
    return 1 if failed else 0


main = alias_main("extract")


if __name__ == "__main__":
    raise SystemExit(main())
