"""usseg-stream: segment a video file, camera, image folder or DICOM cine as a live stream.

    usseg-stream --model model.onnx --source video.mp4|0|DIR [--out overlay.mp4] [--show]
                 [--policy latest|all] [--json results.jsonl] [--pace] [--smooth 0.5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import cv2

from .overlay import draw_overlay
from .providers import DEVICES, ProviderError
from .segmenter import ModelError, Segmenter
from .sources import InputError
from .stream import POLICIES, StreamStats, stream

log = logging.getLogger("usseg.stream")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usseg-stream", description="Segment a probe video stream.")
    p.add_argument("--model", required=True, type=Path, help="exported .onnx model")
    p.add_argument("--source", required=True, help="video file, camera index, image folder or glob, DICOM cine")
    p.add_argument("--out", type=Path, help="overlay video to write (.mp4 or .avi)")
    p.add_argument("--json", type=Path, help="JSON-lines file of per-frame geometry and timings")
    p.add_argument("--show", action="store_true", help="show the overlay in a window (needs an OpenCV GUI build)")
    p.add_argument("--policy", choices=POLICIES, default=None,
                   help="latest: drop stale frames (default for cameras); all: every frame (default for files)")
    p.add_argument("--pace", action="store_true", help="feed frames at the source's frame rate")
    p.add_argument("--fps", type=float, help="frame rate for pacing and the output video when the source has none")
    p.add_argument("--smooth", type=float, help="exponential smoothing of the geometry, alpha in (0, 1]")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--spacing", type=float, help="pixel spacing in mm")
    p.add_argument("--stall-timeout", type=float, default=5.0, help="end when no frame arrives for this long (s)")
    return p


class Outputs:
    """Overlay video and JSON lines, written to temporary files and renamed when the stream ends."""

    def __init__(self, video: Path | None, jsonl: Path | None, fps: float) -> None:
        self.video_path, self.json_path, self.fps = video, jsonl, fps
        self.writer = None
        self.json_file = None
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            self.json_file = open(self._tmp(jsonl), "w")

    @staticmethod
    def _tmp(path: Path) -> Path:
        return path.with_name(f".{path.stem}.partial{path.suffix}")

    def write(self, item, overlay) -> None:
        if self.video_path is not None:
            if self.writer is None:
                self.video_path.parent.mkdir(parents=True, exist_ok=True)
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.video_path.suffix.lower() == ".mp4" else "MJPG"))
                h, w = overlay.shape[:2]
                self.writer = cv2.VideoWriter(str(self._tmp(self.video_path)), fourcc, self.fps, (w, h))
            self.writer.write(overlay)
        if self.json_file is not None:
            record = {"index": item.index, "latency_ms": round(item.latency_ms, 3), **item.result.to_dict()}
            self.json_file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Flush and move the outputs into place (also after Ctrl-C)."""
        if self.writer is not None:
            self.writer.release()
            os.replace(self._tmp(self.video_path), self.video_path)
        if self.json_file is not None:
            self.json_file.close()
            os.replace(self._tmp(self.json_path), self.json_path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    is_camera = args.source.isdigit()
    policy = args.policy or ("latest" if is_camera else "all")
    try:
        seg = Segmenter(args.model, device=args.device, spacing_mm=args.spacing)
    except (ModelError, ProviderError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    stats = StreamStats()
    outputs = Outputs(args.out, args.json, args.fps or 25.0)
    last_status = 0.0
    live = sys.stderr.isatty()
    try:
        for item in stream(seg, args.source, policy=policy, pace=args.pace, fps=args.fps, smoothing=args.smooth,
                           stall_timeout=args.stall_timeout, stats=stats):
            overlay = draw_overlay(item.frame, item.result) if (args.out or args.show) else None
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
    except InputError as exc:
        log.error("%s", exc)
        return 2
    except cv2.error as exc:
        log.error("display failed (%s); use --out instead of --show on a headless OpenCV", str(exc).splitlines()[0])
        return 2
    except KeyboardInterrupt:
        stats.ended_by = "interrupted (Ctrl-C)"
    finally:
        outputs.close()
        if args.json is not None:
            args.json.with_suffix(".summary.json").write_text(json.dumps(stats.to_dict(), indent=1) + "\n")
    if live:
        print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
    print(f"usseg-stream: {stats.status()}; ended by {stats.ended_by}; provider {seg.provider}")
    for path in (args.out, args.json):
        if path is not None:
            print(f"  wrote {path}")
    return 0 if stats.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
