"""The route of one frame through the Segmenter, read from the code that runs (docs/ARCHITECTURE.md):
the composition calls the preparer, the engine, the decoder and the finisher once each, in that
order; nothing calls back into the composition, no stage calls another, and the whole route runs
code in at most 8 runtime modules (a subpackage such as recipe/ or postprocess/ counts as one)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_tiny import tiny_model

import usseg.runtime
from usseg.runtime.segmenter import Segmenter

RUNTIME = Path(usseg.runtime.__file__).resolve().parent
STAGES = ("prepare", "engine", "decode", "finish")


def runtime_module(filename: str) -> str | None:
    """The runtime module a code object belongs to (a subpackage as one), or None outside the runtime."""
    try:
        parts = Path(filename).resolve().relative_to(RUNTIME).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def crossings(fn) -> list[tuple[str | None, str]]:
    """(caller, callee) for every call from one runtime module into another while ``fn`` runs; the
    caller is the nearest runtime module up the stack (None: outside the runtime, the test). The
    stack is kept from the call and return events themselves: a frame that C code (a kernel
    dispatcher, a cache) calls may not know its Python caller."""
    seen: list[tuple[str | None, str]] = []
    stack: list[str | None] = []

    def profile(frame, event, arg):
        if event == "return" and stack:
            stack.pop()
        if event != "call":
            return
        callee = runtime_module(frame.f_code.co_filename)
        caller = next((module for module in reversed(stack) if module is not None), None)
        stack.append(callee)
        if callee is not None and caller != callee:
            seen.append((caller, callee))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


@pytest.fixture(scope="module")
def frame():
    from usseg.train.phantom import PhantomConfig, generate_frame

    return generate_frame(PhantomConfig(height=240, width=300), seed=11, index=0)[0]


def test_the_frame_route_helper_sees_the_calls_it_counts():
    # a call from the test into a runtime module, and from there into another, are what is recorded
    from usseg.runtime.preprocess import get_recipe, preprocess

    recipe, frame = get_recipe("none"), np.zeros((40, 50), np.uint8)
    seen = crossings(lambda: preprocess(frame, recipe, 16, 16))
    assert seen[0] == (None, "preprocess") and ("preprocess", "recipe") in seen
    assert runtime_module(usseg.runtime.__file__) == "__init__" and runtime_module(np.__file__) is None


def test_one_frame_takes_each_stage_once_in_order_through_at_most_8_modules(tmp_path, frame):
    seg = Segmenter(tiny_model(tmp_path / "spine.onnx", height=96, width=128, recipe="realtime", spine=True),
                    device="cpu")
    assert seg.contract.postprocess.kind == "spine" and seg.preprocessing == "host"  # the whole host route
    seg(frame)  # kernels compiled and buffers made: the route of a frame in a running loop
    seen = crossings(lambda: seg(frame))
    entered = [callee for _, callee in seen]
    assert entered[0] == "segmenter" and {"preprocess", "postprocess"} <= set(entered)
    assert [callee for caller, callee in seen if caller == "segmenter"] == list(STAGES)
    assert [(a, b) for a, b in seen if b == "segmenter" and a is not None] == []        # no callback
    assert [(a, b) for a, b in seen if b in STAGES and a != "segmenter"] == []          # no stage calls another
    assert len(set(entered)) <= 8, sorted(set(entered))
    seg.close()
