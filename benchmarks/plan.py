"""What one usseg-bench run times: the models (trained, or given), the frames, the rounds, the device.

usseg-bench makes the plan first (training any model that is not cached yet), writes it to
``OUT/raw/plan.json`` and hands it to the pytest suite, so that training never runs inside a
timed group and every test of the run times the same models on the same frames. A suite run
without usseg-bench (``pytest benchmarks/ --benchmark-enable``) makes the same plan itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import FRAMES_SEED
from .weights import ModelEntry, chain, given, trained

log = logging.getLogger("usseg.bench")

FULL_ROUNDS, QUICK_ROUNDS = 200, 30       # timed rounds per group (one frame, or one call, each)
FULL_WARMUP, QUICK_WARMUP = 5, 2
FULL_DISTINCT, QUICK_DISTINCT = 50, 16     # distinct phantom frames, cycled through the rounds
FULL_STREAM, QUICK_STREAM = 1000, 120      # frames per stream run
SOURCE_FPS = 30.0                          # the live source's rate for policy "latest"


@dataclass
class Plan:
    quick: bool
    device: str                      # cpu, or the CUDA device both pipelines use
    models: list[ModelEntry]         # the chain in order (one entry with --model)
    given: bool = False
    frames: dict[str, int] = field(default_factory=dict)  # count, height, width, seed
    rounds: int = FULL_ROUNDS
    warmup: int = FULL_WARMUP
    stream_frames: int = FULL_STREAM
    source_fps: float = SOURCE_FPS

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def to_dict(self) -> dict[str, Any]:
        return {"quick": self.quick, "device": self.device, "given": self.given, "frames": self.frames,
                "rounds": self.rounds, "warmup": self.warmup, "stream_frames": self.stream_frames,
                "source_fps": self.source_fps, "models": [m.to_dict() for m in self.models]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(d["quick"], d["device"], [ModelEntry.from_dict(m) for m in d["models"]], d.get("given", False),
                   dict(d["frames"]), d["rounds"], d["warmup"], d["stream_frames"], d.get("source_fps", SOURCE_FPS))

    def save(self, path: Path) -> None:
        from usseg.runtime.fileio import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text()))


def resolve_device(device: str) -> str:
    """``cpu`` stays; ``cuda``/``cuda:N`` needs both torch and ONNX Runtime to see CUDA (the
    seed-style rows run PyTorch on it, the usseg rows ONNX Runtime), else an error; ``auto`` is
    CUDA when both do, else the CPU."""
    if device == "cpu":
        return "cpu"
    import onnxruntime as ort
    import torch

    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    ok = ort_cuda and torch.cuda.is_available()
    if device == "auto":
        return "cuda" if ok else "cpu"
    if not device.startswith("cuda"):
        raise ValueError(f"--device {device}: usseg-bench compares on cpu or cuda (auto picks one)")
    if not ok:
        raise ValueError(f"--device {device}: the seed-style rows need torch with CUDA "
                         f"({'yes' if torch.cuda.is_available() else 'no'}) and the usseg rows ONNX Runtime's "
                         f"CUDA provider ({'yes' if ort_cuda else 'no'})")
    return device


def make_plan(quick: bool, device: str, cache: Path, model: Path | None = None) -> Plan:
    """Train (or load from ``cache``) every model of the chain, or take the given one."""
    if model is not None:
        models = [given(Path(model), cache)]
    else:
        models = [trained(m, cache) for m in chain(quick)]
    headline = models[0]
    distinct = QUICK_DISTINCT if quick else FULL_DISTINCT
    # Frames at the first model's input size: neither pipeline resizes them, so the headline pair
    # compares the same pixels; the other models letterbox these frames to their own size.
    frames = {"count": distinct, "height": headline.height, "width": headline.width, "seed": FRAMES_SEED}
    return Plan(quick, resolve_device(device), models, model is not None, frames,
                QUICK_ROUNDS if quick else FULL_ROUNDS, QUICK_WARMUP if quick else FULL_WARMUP,
                QUICK_STREAM if quick else FULL_STREAM)
