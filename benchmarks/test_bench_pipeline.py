"""Per-stage and end-to-end timings of usseg against the seed-style pipeline, same run, same machine.

Each benchmark records extra_info: stage, impl (usseg / seed-style / onnxruntime), provider,
precision, batch and frames per call, which the usseg-bench report turns into per-frame figures
and ratios against the seed-style row of the same stage.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch

from usseg.runtime.preprocess import get_recipe, preprocess
from usseg.runtime.segmenter import Segmenter

from .conftest import device, precisions, rounds
from .models import BENCH_H, BENCH_W, seed_onnx
from .seed_style import SeedStylePipeline


def run(benchmark, fn, *, stage, impl, provider="cpu", precision="fp32", batch=1, slow=False, **info):
    benchmark.extra_info.update(stage=stage, impl=impl, provider=provider, precision=precision, batch=batch,
                                frames=batch, **info)
    benchmark.group = stage
    return benchmark.pedantic(fn, rounds=rounds(slow), warmup_rounds=1, iterations=1)


def cycle(frames):
    it = itertools.cycle(frames)
    return lambda: next(it)


# -- preprocessing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["seed", "nlm-small", "bilateral", "none"])
def test_preprocess_usseg(benchmark, frames, recipe):
    nxt, r = cycle(frames), get_recipe(recipe)
    out = np.zeros((BENCH_H, BENCH_W), np.float32)
    run(benchmark, lambda: preprocess(nxt(), r, BENCH_H, BENCH_W, out=out), stage="preprocess", impl="usseg",
        recipe=recipe, slow=recipe == "seed")


def test_preprocess_seed_style(benchmark, frames, torch_seed_model):
    pipe, nxt = SeedStylePipeline(torch_seed_model), cycle(frames)
    run(benchmark, lambda: pipe.preprocess(nxt()), stage="preprocess", impl="seed-style", recipe="seed", slow=True)


# -- inference ------------------------------------------------------------------------------------------
def _input(frames):
    return preprocess(frames[0], get_recipe("seed"), BENCH_H, BENCH_W)[0][None, None].copy()


@pytest.mark.parametrize("precision", precisions())
def test_inference_usseg(benchmark, frames, precision):
    seg = Segmenter(seed_onnx(precision), device=device())
    seg._input[...] = _input(frames)
    run(benchmark, seg._infer, stage="inference", impl="usseg", provider=seg.provider, precision=precision,
        slow=True)


def test_inference_bare_onnxruntime(benchmark, frames):
    """The same fp32 model through a plain InferenceSession.run: the runtime must stay within 10 %."""
    session = ort.InferenceSession(str(seed_onnx("fp32")), providers=["CPUExecutionProvider"])
    x = _input(frames)
    run(benchmark, lambda: session.run(None, {"image": x})[0].argmax(1), stage="inference", impl="onnxruntime",
        precision="fp32", slow=True)


def test_inference_seed_style(benchmark, frames, torch_seed_model):
    pipe = SeedStylePipeline(torch_seed_model)
    x = torch.from_numpy(_input(frames))
    run(benchmark, lambda: pipe.infer(x), stage="inference", impl="seed-style", provider="torch-cpu", slow=True)


# -- post-processing: benchmarks/test_bench_postprocess.py (one core, usseg vs the reference) --------

# -- end to end -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", precisions())
def test_end_to_end_usseg(benchmark, frames, precision):
    seg, nxt = Segmenter(seed_onnx(precision), device=device()), cycle(frames)
    run(benchmark, lambda: seg(nxt()), stage="end-to-end", impl="usseg", provider=seg.provider,
        precision=precision, recipe="seed", slow=True)


def test_end_to_end_usseg_batch(benchmark, frames):
    seg = Segmenter(seed_onnx("fp32", batch="dynamic"), device=device())
    batch = frames[:4]
    run(benchmark, lambda: seg.batch(batch), stage="end-to-end", impl="usseg", provider=seg.provider,
        batch=len(batch), recipe="seed", slow=True)


# -- in-graph preprocessing (usseg-export --graph-preprocess): raw uint8 frame in, labels out ---------
def _graph_precision() -> str:
    return "fp32" if device() == "cpu" else "fp16"


@pytest.mark.parametrize("recipe", ["seed", "realtime"])
def test_ingraph_pipeline(benchmark, frames, recipe):
    if recipe == "seed" and device() == "cpu":
        pytest.skip("the in-graph non-local means is built for GPUs (about 10x cv2's time on a CPU)")
    precision = _graph_precision()
    seg, nxt = Segmenter(seed_onnx(precision, recipe=recipe, in_graph=True), device=device()), cycle(frames)
    run(benchmark, lambda: seg(nxt()), stage="end-to-end", impl="usseg", provider=seg.provider,
        precision=precision, recipe=f"{recipe}, in graph", slow=True)


def test_ingraph_pipeline_batch(benchmark, frames):
    """Multi-frame mode: one graph call for 8 raw frames."""
    recipe = "realtime" if device() == "cpu" else "seed"
    precision = _graph_precision()
    seg = Segmenter(seed_onnx(precision, recipe=recipe, batch="dynamic", in_graph=True), device=device())
    batch = (frames * 2)[:8]
    run(benchmark, lambda: seg.batch(batch), stage="end-to-end", impl="usseg", provider=seg.provider,
        precision=precision, batch=len(batch), recipe=f"{recipe}, in graph", slow=True)


def test_end_to_end_seed_style(benchmark, frames, torch_seed_model):
    pipe, nxt = SeedStylePipeline(torch_seed_model), cycle(frames)
    run(benchmark, lambda: pipe(nxt()), stage="end-to-end", impl="seed-style", provider="torch-cpu",
        recipe="seed", slow=True)


def test_end_to_end_given_model(benchmark, frames, user_model):
    """The model given to usseg-bench --model (e.g. the demo's), on the same frames."""
    if user_model is None:
        pytest.skip("no --model given")
    seg, nxt = Segmenter(user_model, device=device()), cycle(frames)
    c = seg.contract
    run(benchmark, lambda: seg(nxt()), stage="end-to-end", impl="usseg", provider=seg.provider,
        precision=c.provenance.get("precision", "fp32"), recipe=f"given model: {c.recipe.name} {c.input.height}x{c.input.width}",
        slow=True, model=str(user_model))
