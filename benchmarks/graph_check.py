"""In-graph preprocessing on a given provider: agreement with OpenCV and time per frame.

    python -m usseg.benchmarks.graph_check --device cuda --out graph_check.json

For each recipe, the ONNX recipe (usseg.export.recipe_graph, raw uint8 frame in) runs on the
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
from pathlib import Path

import numpy as np
import onnxruntime as ort

from usseg.runtime.preprocess import Letterbox, enhance, get_recipe
from usseg.runtime.providers import (
    default_cache_dir,
    plan_providers,
    preload_gpu_libraries,
)

from .ablation import parse_size
from .models import phantom_frames


def _session(model_bytes: bytes, device: str) -> ort.InferenceSession:
    plan = plan_providers(device, default_cache_dir(), cuda_graph=False, exact=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if device != "cpu":  # fail rather than time nodes that quietly fell back to the CPU
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model_bytes, options, providers=plan.providers)


def check_recipe(recipe: str, frames: list[np.ndarray], size: tuple[int, int], device: str, rounds: int,
                 batch: int) -> dict:
    from usseg.export.recipe_graph import recipe_graph

    fh, fw = frames[0].shape
    model = recipe_graph(get_recipe(recipe), fh, fw, *size, batch=None, expose_enhanced=True)
    session = _session(model.SerializeToString(), device)
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
            "min_within_1": min(within), "min_exact": min(exact), "frames": len(frames),
            "median_ms": 1e3 * statistics.median(times[1:]), "batch": batch, "batched_ms_per_frame": 1e3 * batched}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m usseg.benchmarks.graph_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--recipes", nargs="+", default=["seed", "realtime"])
    p.add_argument("--frame", default="480x640", help="frame size HxW")
    p.add_argument("--size", default="480x640", help="model input size HxW")
    p.add_argument("--count", type=int, default=4, help="phantom frames to compare")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device != "cpu":
        preload_gpu_libraries()
    fh, fw = parse_size(args.frame)
    size = parse_size(args.size)
    frames = phantom_frames(args.count, height=fh, width=fw)
    results = [check_recipe(r, frames, size, args.device, args.rounds, args.batch) for r in args.recipes]
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    return 0 if all(r["min_within_1"] >= 0.999 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
