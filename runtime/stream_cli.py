"""usseg stream: segment a video file, camera, image folder or DICOM cine as a live stream.

    usseg stream --model model.onnx --source video.mp4|0|DIR [--out DIR] [--show | --view [--port N]]
                 [--policy latest|all] [--pace] [--smooth 0.5]

With --out DIR: DIR/overlay.mp4 (or .avi; --video none for no video), DIR/results.jsonl (one
line of geometry and timings per frame) and DIR/summary.json, each written under a temporary name
and moved into place when the stream ends, also after Ctrl-C or SIGTERM (the usual ends of a live
stream: the exit code says whether frames failed, not how it was stopped). An output that cannot be
written (a full disk) ends the stream with one line naming it and leaves the previous outputs as
they were.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .cli import add_device_option, add_engine_options, add_model_option, add_out_option, alias_main
from .dicom import calibration_for
from .errors import EXIT_OK, EXIT_SOME_FAILED, UsageError, UssegError, WriteError
from .fileio import atomic_path, make_dirs, output_lock
from .imageio import add_max_pixels_option, check_model_file
from .interrupt import stop_signals, stopped_by
from .overlay import draw_overlay
from .provenance import provenance
from .segmenter import Segmenter
from .sources import InputError, open_source
from .stream import POLICIES, StreamStats, stream
from .view import check_token, start_view

log = logging.getLogger("usseg.stream")

VIDEO_FORMATS = {"mp4": "mp4v", "avi": "MJPG"}  # container -> fourcc that OpenCV's own builds write


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, "exported .onnx model")
    p.add_argument("--source", required=True, help="video file, camera index, image folder or glob, DICOM cine")
    add_out_option(p, "output folder: overlay video, results.jsonl, summary.json", required=False)
    p.add_argument("--video", choices=(*VIDEO_FORMATS, "none"), default="mp4",
                   help="overlay video container in --out (default mp4; none: no video)")
    p.add_argument("--show", action="store_true", help="show the overlay in a window (needs an OpenCV GUI build)")
    p.add_argument("--view", action="store_true",
                   help="serve a live view (overlay, readouts, fps, latency) to a web browser; no GUI needed")
    p.add_argument("--host", default="127.0.0.1",
                   help="address of the live view (default 127.0.0.1: this machine only; use an SSH tunnel)")
    p.add_argument("--port", type=int, default=0, help="port of the live view (default 0: a free port, printed)")
    p.add_argument("--token", help="the live view's access token (default: a random one, printed in its URL; "
                                   "required on any address but this machine's)")
    p.add_argument("--policy", choices=POLICIES, default=None,
                   help="latest: drop stale frames (default for cameras); all: every frame (default for files)")
    p.add_argument("--pace", action="store_true", help="feed frames at the source's frame rate")
    p.add_argument("--fps", type=float, help="frame rate for pacing and the output video when the source has none")
    p.add_argument("--smooth", type=float, help="exponential smoothing of the geometry, alpha in (0, 1]")
    add_device_option(p)
    add_engine_options(p)
    p.add_argument("--spacing", type=float, help="pixel spacing in mm")
    p.add_argument("--stall-timeout", type=float, default=5.0, help="end when no frame arrives for this long (s)")
    add_max_pixels_option(p)


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads."""
    check_model_file(args.model)
    check_token(args.token)
    if args.smooth is not None and not 0 < args.smooth <= 1:
        raise UsageError(f"--smooth {args.smooth}: alpha must be in (0, 1]")
    if not (math.isfinite(args.stall_timeout) and args.stall_timeout > 0):
        raise UsageError(f"--stall-timeout {args.stall_timeout}: must be a number of seconds > 0")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps {args.fps}: must be a number > 0")
    if args.spacing is not None and not (math.isfinite(args.spacing) and args.spacing > 0):
        raise UsageError(f"--spacing {args.spacing}: must be a number > 0 (mm per pixel)")
    if args.out is not None:
        check_out_folder(args.out)
        if args.video != "none":
            check_video_format(args.video)


def check_out_folder(out: Path) -> None:
    """--out is (or can become) a writable folder; nothing is created yet."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not a writable folder")


def check_video_format(video: str) -> None:
    """This OpenCV build can write the overlay container: found out on a tiny clip, not after the
    whole source has been processed."""
    with tempfile.TemporaryDirectory(prefix="usseg-video-check-") as folder:
        writer = cv2.VideoWriter(str(Path(folder) / f"check.{video}"), cv2.VideoWriter_fourcc(*VIDEO_FORMATS[video]),
                                 25.0, (64, 48))
        try:
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((48, 64, 3), np.uint8))
        finally:
            writer.release()
    if not ok:
        others = [v for v in VIDEO_FORMATS if v != video]
        raise UsageError(f"--video {video}: this OpenCV build cannot write {video} ({VIDEO_FORMATS[video]}); "
                         f"use --video {' or '.join(others)} or --video none")


class OutputError(UssegError):
    """An output that cannot be written."""


class Outputs:
    """Overlay video, JSON lines and summary in one folder. Nothing is created before the source
    delivers its first frame; each file is written under a temporary name and moved into place
    when the stream ends (also after Ctrl-C or SIGTERM), so a stream that never starts leaves --out
    as it was. When an output cannot be written, none is kept: the temporaries are removed and
    the previous outputs stay."""

    def __init__(self, folder: Path | None, video: str, fps: float) -> None:
        self.folder, self.fps = folder, fps
        self.video_path = None if folder is None or video == "none" else folder / f"overlay.{video}"
        self.fourcc = VIDEO_FORMATS.get(video)
        self.writer = None
        self.json_file = None
        self._pending: list = []  # atomic_path contexts of the files being written, each a temporary until closed
        self.broken = False  # an output could not be written: nothing is kept

    def _open(self) -> None:
        make_dirs(self.folder)
        ctx = atomic_path(self.folder / "results.jsonl", "the per-frame results")
        self._pending.append(ctx)
        self.json_file = open(ctx.__enter__(), "w")

    def _open_video(self, height: int, width: int) -> None:
        ctx = atomic_path(self.video_path, "the overlay video")
        self._pending.append(ctx)
        tmp = ctx.__enter__()
        self.writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not self.writer.isOpened():
            self.writer = None
            self._disk_check(tmp)  # a full disk is named as such, not blamed on the container
            raise OutputError(f"{self.video_path}: OpenCV cannot write {width}x{height} frames in this container; "
                              f"try --video {'avi' if self.video_path.suffix == '.mp4' else 'mp4'} or --video none")

    def _disk_check(self, tmp: Path) -> None:
        try:
            with open(tmp, "wb") as f:
                f.write(bytes(1 << 16))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise WriteError.of(self.video_path, exc, "the overlay video") from None

    def write(self, item, overlay) -> None:
        if self.folder is None:
            return
        try:
            if self.video_path is not None:
                if self.writer is None:
                    self._open_video(*overlay.shape[:2])
                self.writer.write(overlay)
            if self.json_file is None:
                self._open()
            record = {"index": item.index, "latency_ms": round(item.latency_ms, 3), **item.result.to_dict()}
            self.json_file.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise WriteError.of(self.folder / "results.jsonl", exc, "the per-frame results") from None

    @property
    def wants_overlay(self) -> bool:
        return self.video_path is not None

    def discard(self) -> None:
        """Drop what was written so far (an output failed): temporaries removed, old outputs kept."""
        self.broken = True
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.json_file is not None:
            self.json_file.close()
        while self._pending:
            self._pending.pop().__exit__(OutputError, None, None)  # removes the temporary

    def close(self, summary: dict) -> list[Path]:
        """Move the outputs into place together, once all are written (summary.json staged too);
        returns what was written. A stream that captured no frame writes nothing (existing files
        stay as they were)."""
        if self.folder is None or self.broken or (self.json_file is None and not summary["captured"]):
            self.discard()
            return []
        written = [self.folder / "results.jsonl", self.folder / "summary.json"]
        try:
            if self.json_file is None:  # frames came, none could be segmented: still a result
                self._open()
            self.json_file.close()
            if self.writer is not None:
                self.writer.release()
                self.writer = None
                written.insert(0, self.video_path)
            ctx = atomic_path(self.folder / "summary.json", "the stream's summary")
            self._pending.append(ctx)
            ctx.__enter__().write_text(json.dumps(summary, indent=1) + "\n")
            while self._pending:
                self._pending.pop(0).__exit__(None, None, None)  # renamed into place
        except OSError as exc:
            self.discard()
            raise WriteError.of(self.folder / "summary.json", exc, "the stream's summary") from None
        return written


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.out is None:
        return _run(args)
    with output_lock(args.out, "usseg stream"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    is_camera = args.source.isdigit()
    policy = args.policy or ("latest" if is_camera else "all")
    calibration = calibration_for(args.spacing, args.source)  # --spacing, else a DICOM file's own
    # a source that does not open stops here, nothing written
    source = open_source(args.source, args.fps, args.max_pixels)
    try:
        seg = Segmenter(args.model, device=args.device, spacing_mm=calibration.spacing_mm,
                        preprocess=args.preprocess, flip_tta=args.tta)
    except BaseException:
        source.close()
        raise
    stats = StreamStats()
    view = start_view(seg, source=args.source, calibration=calibration, stats=stats, host=args.host,
                      port=args.port, token=args.token) if args.view else None
    outputs = Outputs(args.out, args.video, args.fps or source.fps or 25.0)
    last_status = 0.0
    live = sys.stderr.isatty()
    written: list[Path] = []
    stopped = None
    failure: str | None = None  # why the stream ended early (out of memory)
    try:
        with stop_signals():
            for item in stream(seg, source, policy=policy, pace=args.pace, fps=args.fps, smoothing=args.smooth,
                               stall_timeout=args.stall_timeout, stats=stats):
                calibration.apply(item.result)
                wanted = outputs.wants_overlay or args.show or (view is not None and view.wants_frame())
                overlay = draw_overlay(item.frame, item.result) if wanted else None
                outputs.write(item, overlay)
                if view is not None:
                    view.publish(item, overlay)
                if args.show:
                    cv2.imshow("usseg", overlay)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        stats.ended_by = "closed by the user"
                        break
                if time.perf_counter() - last_status > (0.5 if live else 5.0):
                    # A terminal gets one self-updating line; a log file a line every few seconds.
                    print(("\r" if live else "") + stats.status(), end="" if live else "\n", file=sys.stderr,
                          flush=True)
                    last_status = time.perf_counter()
    except cv2.error as exc:
        if exc.code != cv2.Error.StsNoMem:
            raise UsageError(f"display failed ({str(exc).splitlines()[0]}); use --out instead of --show "
                             f"on a headless OpenCV, or --view for a live view in a browser") from None
        stats.ended_by = failure = _out_of_memory(stats)
    except MemoryError:
        stats.ended_by = failure = _out_of_memory(stats)
    except (OutputError, WriteError) as exc:
        stats.ended_by = f"output failed: {exc}"
        outputs.discard()
        raise
    except KeyboardInterrupt as exc:
        stopped = stopped_by(exc)
        stats.ended_by = f"interrupted ({stopped})"
    finally:
        if view is not None:
            view.close(stats.ended_by)
        written = outputs.close({**stats.to_dict(), **calibration.to_dict(), "provenance": provenance(seg)})
    if live:
        print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
    if stats.captured == 0 and stopped is None:
        raise InputError(f"{source.name}: no frame could be read ({stats.ended_by}); nothing written")
    print(f"usseg stream: {stats.status()}; ended by {stats.ended_by}; provider {seg.provider}")
    for path in written:
        print(f"  wrote {path}")
    if failure is not None:
        return EXIT_SOME_FAILED
    return EXIT_OK if stats.failed == 0 and stats.source_error is None else EXIT_SOME_FAILED


def _out_of_memory(stats: StreamStats) -> str:
    reason = (f"out of memory after {stats.processed} frames (a smaller --max-pixels refuses large frames "
              f"before they are read)")
    log.error("%s", reason)
    stats.source_error = reason
    return reason


main = alias_main("stream")


if __name__ == "__main__":
    raise SystemExit(main())
