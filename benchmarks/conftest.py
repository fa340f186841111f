"""Shared fixtures of the benchmark suite (run it with usseg-bench, or pytest benchmarks/ --benchmark-enable)."""

from __future__ import annotations

import os

import pytest

from .models import phantom_frames, seed_torch_model


def quick() -> bool:
    return os.environ.get("USSEG_BENCH_QUICK", "") not in ("", "0")


def rounds(slow: bool = False) -> int:
    if quick():
        return 3 if slow else 10
    return 10 if slow else 50


def device() -> str:
    return os.environ.get("USSEG_BENCH_DEVICE", "cpu")


def precisions() -> list[str]:
    return ["fp32", "int8"] if quick() else ["fp32", "fp16", "int8"]


@pytest.fixture(scope="session")
def frames():
    return phantom_frames(8)


@pytest.fixture(scope="session")
def torch_seed_model():
    return seed_torch_model()


@pytest.fixture(scope="session")
def user_model():
    """The model given to usseg-bench --model, or None."""
    path = os.environ.get("USSEG_BENCH_MODEL")
    return path or None
