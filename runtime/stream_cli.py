"""usseg stream: segment a video file, camera, image folder or DICOM cine as a live stream.

    usseg stream --model model.onnx --source video.mp4|0|DIR [--out DIR] [--show]
                 [--policy latest|all] [--pace] [--smooth 0.5]

With --out DIR: DIR/overlay.mp4 (or .avi; --video none for no video), DIR/results.jsonl (one
line of geometry and timings per frame) and DIR/summary.json, each written under a temporary name
and moved into place when the stream ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2

from .cli import add_device_option, add_model_option, add_out_option, alias_main
from .errors import EXIT_OK, EXIT_SOME_FAILED, UsageError
from .fileio import atomic_path, make_dirs, write_json
from .overlay import draw_overlay
from .segmenter import Segmenter
from .stream import POLICIES, StreamStats, stream

log = logging.getLogger("usseg.stream")

VIDEO_FORMATS = {"mp4": "mp4v", "avi": "MJPG"}  # container -> fourcc that OpenCV's own builds write


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, "exported .onnx model")
    p.add_argument("--source", required=True, help="video file, camera index, image folder or glob, DICOM cine")
    add_out_option(p, "output folder: overlay video, results.jsonl, summary.json", required=False)
    p.add_argument("--video", choices=(*VIDEO_FORMATS, "none"), default="mp4",
                   help="overlay video container in --out (default mp4; none: no video)")
    p.add_argument("--show", action="store_true", help="show the overlay in a window (needs an OpenCV GUI build)")
    p.add_argument("--policy", choices=POLICIES, default=None,
                   help="latest: drop stale frames (default for cameras); all: every frame (default for files)")
    p.add_argument("--pace", action="store_true", help="feed frames at the source's frame rate")
    p.add_argument("--fps", type=float, help="frame rate for pacing and the output video when the source has none")
    p.add_argument("--smooth", type=float, help="exponential smoothing of the geometry, alpha in (0, 1]")
    add_device_option(p)
    p.add_argument("--spacing", type=float, help="pixel spacing in mm")
    p.add_argument("--stall-timeout", type=float, default=5.0, help="end when no frame arrives for this long (s)")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads."""
    if args.smooth is not None and not 0 < args.smooth <= 1:
        raise UsageError(f"--smooth {args.smooth}: alpha must be in (0, 1]")
    if not args.stall_timeout > 0:
        raise UsageError(f"--stall-timeout {args.stall_timeout}: must be > 0 seconds")
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps {args.fps}: must be > 0")
    if args.spacing is not None and not args.spacing > 0:
        raise UsageError(f"--spacing {args.spacing}: must be > 0 (mm per pixel)")


class Outputs:
    """Overlay video, JSON lines and summary in one folder, written to temporary files and moved
    into place when the stream ends (also after Ctrl-C)."""

    def __init__(self, folder: Path | None, video: str, fps: float) -> None:
        self.folder, self.fps = folder, fps
        self.writer = None
        self.json_file = None
        self._video_ctx = self._json_ctx = None
        if folder is None:
            return
        make_dirs(folder)
        self.video_path = None if video == "none" else folder / f"overlay.{video}"
        self.fourcc = VIDEO_FORMATS.get(video)
        self._json_ctx = atomic_path(folder / "results.jsonl")
        self.json_file = open(self._json_ctx.__enter__(), "w")

    def write(self, item, overlay) -> None:
        if self.folder is None:
            return
        if self.video_path is not None:
            if self.writer is None:
                self._video_ctx = atomic_path(self.video_path)
                tmp = self._video_ctx.__enter__()
                h, w = overlay.shape[:2]
                self.writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            self.writer.write(overlay)
        record = {"index": item.index, "latency_ms": round(item.latency_ms, 3), **item.result.to_dict()}
        self.json_file.write(json.dumps(record) + "\n")

    @property
    def wants_overlay(self) -> bool:
        return self.folder is not None and self.video_path is not None

    def close(self, summary: dict) -> list[Path]:
        """Move the outputs into place; returns what was written."""
        written: list[Path] = []
        if self.folder is None:
            return written
        if self.writer is not None:
            self.writer.release()
            self._video_ctx.__exit__(None, None, None)
            written.append(self.video_path)
        self.json_file.close()
        self._json_ctx.__exit__(None, None, None)
        write_json(self.folder / "summary.json", summary)
        return written + [self.folder / "results.jsonl", self.folder / "summary.json"]


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    is_camera = args.source.isdigit()
    policy = args.policy or ("latest" if is_camera else "all")
    seg = Segmenter(args.model, device=args.device, spacing_mm=args.spacing)
    stats = StreamStats()
    outputs = Outputs(args.out, args.video, args.fps or 25.0)
    last_status = 0.0
    live = sys.stderr.isatty()
    written: list[Path] = []
    try:
        for item in stream(seg, args.source, policy=policy, pace=args.pace, fps=args.fps, smoothing=args.smooth,
                           stall_timeout=args.stall_timeout, stats=stats):
            overlay = draw_overlay(item.frame, item.result) if (outputs.wants_overlay or args.show) else None
            outputs.write(item, overlay)
            if args.show:
                cv2.imshow("usseg", overlay)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    stats.ended_by = "closed by the user"
                    break
            if time.perf_counter() - last_status > (0.5 if live else 5.0):
                # A terminal gets one self-updating line; a log file a line every few seconds.
                print(("\r" if live else "") + stats.status(), end="" if live else "\n", file=sys.stderr, flush=True)
                last_status = time.perf_counter()
    except cv2.error as exc:
        raise UsageError(f"display failed ({str(exc).splitlines()[0]}); use --out instead of --show "
                         f"on a headless OpenCV") from None
    except KeyboardInterrupt:
        stats.ended_by = "interrupted (Ctrl-C)"
    finally:
        written = outputs.close(stats.to_dict())
    if live:
        print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
    print(f"usseg stream: {stats.status()}; ended by {stats.ended_by}; provider {seg.provider}")
    for path in written:
        print(f"  wrote {path}")
    return EXIT_OK if stats.failed == 0 else EXIT_SOME_FAILED


main = alias_main("stream")


if __name__ == "__main__":
    raise SystemExit(main())
