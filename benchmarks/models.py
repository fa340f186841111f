"""Models and frames for the benchmarks: the seed UNet configuration, exported once per cache
folder in each precision. Timing does not depend on the weights, so an untrained network is used
unless a model is given (usseg-bench --model)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

BENCH_H, BENCH_W = 480, 640


def cache_dir() -> Path:
    path = Path(os.environ.get("USSEG_BENCH_DIR", Path.home() / ".cache" / "usseg" / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def phantom_frames(count: int = 8, seed: int = 424242, height: int = BENCH_H, width: int = BENCH_W) -> list[np.ndarray]:
    from usseg.train.phantom import PhantomConfig, generate_frame

    cfg = PhantomConfig(height=height, width=width)
    return [generate_frame(cfg, seed=seed, index=i)[0] for i in range(count)]


def seed_torch_model(config: str = "seed"):
    import torch

    from usseg.train.model import build_model, get_model_config

    torch.manual_seed(0)
    return build_model(get_model_config(config), 4).eval()


def seed_checkpoint(recipe: str = "seed", config: str = "seed") -> Path:
    """A checkpoint of a model configuration (untrained) with a full contract."""
    from usseg.runtime.contract import (
        SPINE_CLASSES,
        Contract,
        InputSpec,
        default_postprocess,
    )
    from usseg.runtime.preprocess import get_recipe
    from usseg.train.checkpoint import save_checkpoint
    from usseg.train.model import get_model_config

    path = cache_dir() / f"{config}-{recipe}.pt"
    if not path.is_file():
        cfg = get_model_config(config)
        contract = Contract(classes=SPINE_CLASSES, input=InputSpec(height=cfg.height, width=cfg.width),
                            recipe=get_recipe(recipe), postprocess=default_postprocess(SPINE_CLASSES),
                            provenance={"note": "untrained network, for timing only"})
        save_checkpoint(path, {"epoch": 0, "model_state_dict": seed_torch_model(config).state_dict(),
                               "model_config": cfg.to_dict(), "contract": contract.to_dict()})
    return path


def calibration_folder(count: int = 8) -> Path:
    import cv2

    folder = cache_dir() / "calibration"
    if not folder.is_dir() or len(list(folder.glob("*.png"))) < count:
        folder.mkdir(exist_ok=True)
        for i, frame in enumerate(phantom_frames(count, seed=77)):
            cv2.imwrite(str(folder / f"cal_{i:03d}.png"), frame)
    return folder


def seed_onnx(precision: str = "fp32", recipe: str = "seed", batch: str = "1", config: str = "seed",
              in_graph: bool = False) -> Path:
    """A model configuration (default: the seed's) exported in ``precision`` with a fixed or
    dynamic batch (cached). ``in_graph``: the recipe inside the graph, fed raw 480x640 frames,
    labels out (argmax in the graph)."""
    from usseg.export.cli import main as export_main

    suffix = "-graph" if in_graph else ""
    path = cache_dir() / f"{config}-{recipe}-{precision}-b{batch}{suffix}.onnx"
    if not path.is_file():
        args = [str(seed_checkpoint(recipe, config)), "-o", str(path), "--no-verify", "--batch", batch]
        if in_graph:
            args += ["--graph-preprocess", f"{BENCH_H}x{BENCH_W}", "--output", "labels"]
        if precision == "fp16":
            args.append("--fp16")
        elif precision == "int8":
            args += ["--int8", "--calibration", str(calibration_folder())]
        if export_main(args) != 0:
            raise RuntimeError(f"could not export the benchmark model {path}")
    return path
