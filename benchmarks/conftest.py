"""Shared fixtures of the benchmark suite: run it with usseg-bench, or
``pytest benchmarks/ --benchmark-enable`` (which makes the same plan itself, see plan.py).

Latency and throughput groups run in the interleaving harness (harness.py) and hand their rows
to ``results``, which writes one JSON file per group for the usseg-bench report; the training
cost benchmarks use pytest-benchmark's own rounds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .models import cache_dir, timed_frames
from .plan import Plan, make_plan


def quick() -> bool:
    return os.environ.get("USSEG_BENCH_QUICK", "") not in ("", "0")


def device() -> str:
    return os.environ.get("USSEG_BENCH_DEVICE", "cpu")


def rounds(slow: bool = False) -> int:
    """pytest-benchmark rounds for the training-cost rows (too few for a p99: the report says so)."""
    if quick():
        return 3 if slow else 10
    return 10 if slow else 50


@dataclass(frozen=True)
class Frames:
    images: list
    truth_shares: list[float]   # background, MID, VTB, EPI by the phantom's annotations
    spec: dict

    def describe(self) -> dict:
        return {**self.spec, "truth_shares": self.truth_shares}


@pytest.fixture(scope="session")
def plan() -> Plan:
    path = os.environ.get("USSEG_BENCH_PLAN")
    if path:
        return Plan.load(Path(path))
    model = os.environ.get("USSEG_BENCH_MODEL")
    return make_plan(quick(), device(), cache_dir(), Path(model) if model else None)


@pytest.fixture(scope="session")
def frames(plan) -> Frames:
    f = plan.frames
    images, shares = timed_frames(f["count"], f["height"], f["width"], f["seed"])
    return Frames(images, shares, dict(f))


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    path = os.environ.get("USSEG_BENCH_RESULTS")
    folder = Path(path) if path else tmp_path_factory.mktemp("bench-results")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def results(results_dir, request):
    """``results(data)``: this test's rows etc. as results_dir/<test name>.json."""

    def write(data: dict) -> Path:
        from usseg.runtime.fileio import write_json

        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        path = results_dir / f"{name}.json"
        write_json(path, {"test": request.node.nodeid, **data})
        return path

    return write


def read_results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
