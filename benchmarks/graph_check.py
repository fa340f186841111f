"""In-graph preprocessing on a given provider: agreement with OpenCV and time per frame.

    python -m usseg.benchmarks.graph_check --device cuda --out graph_check.json

For each recipe, the ONNX recipe (usseg.runtime.recipe.graph, raw uint8 frame in) runs on the
provider of ``--device`` with the options the Segmenter uses for such models, and its 8-bit
output is compared with ``usseg.runtime.preprocess.enhance`` on the same phantom frames: the
share of pixels within 1 grey level (the acceptance figure, >= 99.9 %) and the share that is
exact. Timing is the median over ``--rounds`` single-frame runs and one batched run, host to host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from usseg.runtime.fileio import write_text
from usseg.runtime.preprocess import Letterbox, enhance, get_recipe
from usseg.runtime.providers import (
    ModelFacts,
    ProviderError,
    candidate_plans,
    default_cache_dir,
    parse_device,
    preload_gpu_libraries,
)
from usseg.runtime.sessions import available_providers, check_active, open_session

from .ablation import parse_size
from .models import phantom_frames

CPU_NODES_REFUSED = "assigned to the default CPU EP"
CONV_ALGOS = ("DEFAULT", "HEURISTIC", "EXHAUSTIVE")  # ORT's cudnn_conv_algo_search values


def _with_conv_algo(plan, conv_algo: str | None):
    """``plan`` with cuDNN's convolution algorithm search set to ``conv_algo`` (None: unchanged)."""
    if conv_algo is None:
        return plan
    providers = tuple((name, {**opts, "cudnn_conv_algo_search": conv_algo}) if name == "CUDAExecutionProvider"
                      else (name, opts) for name, opts in plan.providers)
    return replace(plan, providers=providers)


def _session(model_bytes: bytes, device: str, conv_algo: str | None = None):
    """The recipe graph on ``device`` with the options the Segmenter uses for in-graph models
    (``conv_algo``: another cuDNN convolution algorithm search, to compare them).

    On a GPU the CPU provider may take no node first (ORT's ``session.disable_cpu_ep_fallback``,
    valid only when the CPU provider is not listed), so that no quietly CPU-run node is timed;
    where ORT puts some nodes on the CPU regardless (shape computations), the session is opened
    with the CPU allowed and the row says so. Returns (session, whether the CPU may take nodes).
    """
    def plan(cpu_nodes: bool):
        return _with_conv_algo(candidate_plans(device, available_providers(), ModelFacts(exact=True), cuda_graph=False,
                                               cache_dir=default_cache_dir(), cpu_nodes=cpu_nodes)[0], conv_algo)

    strict = plan(cpu_nodes=parse_device(device).kind == "cpu")
    try:
        session = open_session(model_bytes, strict)
    except Exception as exc:  # ORT raises its own exception types
        if CPU_NODES_REFUSED not in str(exc):
            raise
        strict = plan(cpu_nodes=True)
        session = open_session(model_bytes, strict)
    check_active(session, strict)
    return session, strict.cpu_nodes


def check_recipe(recipe: str, frames: list[np.ndarray], size: tuple[int, int], device: str, rounds: int,
                 batch: int, conv_algo: str | None = None) -> dict:
    from usseg.runtime.recipe.graph import recipe_graph

    fh, fw = frames[0].shape
    model = recipe_graph(get_recipe(recipe), fh, fw, *size, batch=None, expose_enhanced=True)
    session, cpu_nodes = _session(model.SerializeToString(), device, conv_algo)
    box = Letterbox.fit(fh, fw, *size)
    within, exact = [], []
    for frame in frames:
        enhanced = session.run(["enhanced"], {"frame": frame[None, None]})[0][0, 0].astype(np.int16)
        reference = enhance(box.resize_image(frame), get_recipe(recipe)).astype(np.int16)
        diff = np.abs(enhanced - reference)
        within.append(float((diff <= 1).mean()))
        exact.append(float((diff == 0).mean()))
    times = []
    for i in range(rounds + 1):
        x = frames[i % len(frames)][None, None]
        t = time.perf_counter()
        session.run(["preprocessed"], {"frame": x})
        times.append(time.perf_counter() - t)
    stack = np.stack([frames[i % len(frames)] for i in range(batch)])[:, None]
    session.run(["preprocessed"], {"frame": stack})
    t = time.perf_counter()
    session.run(["preprocessed"], {"frame": stack})
    batched = (time.perf_counter() - t) / batch
    return {"recipe": recipe, "frame": [fh, fw], "model_input": list(size), "provider": session.get_providers()[0],
            "cpu_may_take_nodes": cpu_nodes, "conv_algo": conv_algo or "as the Segmenter",
            "min_within_1": min(within), "min_exact": min(exact), "frames": len(frames),
            "median_ms": 1e3 * statistics.median(times[1:]), "batch": batch, "batched_ms_per_frame": 1e3 * batched}


def _device(text: str) -> str:
    try:
        kind = parse_device(text).kind
    except ProviderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if kind not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: graph_check runs on cpu, cuda or cuda:N")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m usseg.benchmarks.graph_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--recipes", nargs="+", default=["seed", "realtime"])
    p.add_argument("--frame", default="480x640", help="frame size HxW")
    p.add_argument("--size", default="480x640", help="model input size HxW")
    p.add_argument("--count", type=int, default=4, help="phantom frames to compare")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--conv-algo", nargs="+", choices=CONV_ALGOS, default=None,
                   help="cuDNN convolution algorithm searches to compare (default: the Segmenter's)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device != "cpu":
        preload_gpu_libraries()
    fh, fw = parse_size(args.frame)
    size = parse_size(args.size)
    frames = phantom_frames(args.count, height=fh, width=fw)
    results = [check_recipe(r, frames, size, args.device, args.rounds, args.batch, algo)
               for r in args.recipes for algo in (args.conv_algo or [None])]
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 0 if all(r["min_within_1"] >= 0.999 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
