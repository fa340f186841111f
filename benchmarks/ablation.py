"""Ablation driver: preprocessing recipes (accuracy and cost), learning curve, one table.

It only calls the project's own CLIs (usseg-train, usseg-evaluate) and its preprocessing
function, so each number in docs/ablation.md can be reproduced by hand with the commands it logs.

    python -m usseg.benchmarks.ablation cost  --frames runs/abl/data --size 240x320 --out runs/abl/cost.json
    python -m usseg.benchmarks.ablation train --data runs/abl/data --base runs/demo/run/config.json --epochs 30 \
        --recipes seed realtime no-clahe --out runs/abl/phantom
    python -m usseg.benchmarks.ablation subsets --data runs/abl/data --fractions 0.25 0.5 --out runs/abl/subsets
    python -m usseg.benchmarks.ablation table --runs runs/abl/phantom --cost runs/abl/cost.json
    python -m usseg.benchmarks.ablation speed --models rt.onnx --threads 0 1 --out runs/abl/speed.json
    python -m usseg.benchmarks.ablation sheet --data DATA --infer INFER_OUT --out docs/overlays.png

Training runs one at a time, niced, with one intra-op thread: on a shared 2-core machine two
PyTorch threads fighting other jobs were ten times slower per step than one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from usseg.runtime.preprocess import get_recipe, preprocess

log = logging.getLogger("usseg.ablation")

BIN = Path(sys.executable).parent


def parse_size(text: str) -> tuple[int, int]:
    """'240x320' -> (240, 320): the model input size, height first, as in ModelConfig."""
    h, w = text.lower().split("x")
    return int(h), int(w)


def frame_paths(folder: Path, limit: int) -> list[Path]:
    """Frames to time: a mask folder's images/ or a plain image folder, sorted, at most ``limit``."""
    images = folder / "images" if (folder / "images").is_dir() else folder
    return sorted(images.glob("*.png"))[:limit]


def time_recipe(frames: list[np.ndarray], recipe: str, height: int, width: int, rounds: int) -> dict:
    """Median and p90 per-frame cost of preprocess() (letterbox + recipe + min-max) at model size.

    The whole preprocess() call is timed, not the recipe alone, because that is what the runtime
    pays per frame; one warm-up pass keeps first-call allocation out of the figure.
    """
    spec = get_recipe(recipe)
    out = np.zeros((height, width), np.float32)
    for frame in frames[:2]:
        preprocess(frame, spec, height, width, out=out)
    times = []
    for _ in range(rounds):
        for frame in frames:
            start = time.perf_counter()
            preprocess(frame, spec, height, width, out=out)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"recipe": recipe, "size": f"{height}x{width}", "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3), "samples": len(times)}


def cmd_cost(args: argparse.Namespace) -> int:
    """Preprocessing cost per frame for each recipe, with the machine load recorded beside it."""
    cv2.setNumThreads(args.threads)
    frames = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in frame_paths(args.frames, args.count)]
    height, width = parse_size(args.size)
    rows = []
    for recipe in args.recipes:
        row = time_recipe(frames, recipe, height, width, args.rounds)
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        log.info("%s", row)
        rows.append(row)
    result = {"frames": str(args.frames), "frame_size": list(frames[0].shape[:2]), "cv2_threads": args.threads,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() and args.append else None
    if previous:
        previous["rows"] += rows
        result = previous
    args.out.write_text(json.dumps(result, indent=1))
    return 0


def write_config(base: Path, recipe: str, out: Path, overrides: dict) -> Path:
    """A --config file for one variant: the base file's fields with the recipe (and overrides) set."""
    data = json.loads(base.read_text())
    data.update(overrides, recipe=recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return out


def call(cmd: list[str]) -> None:
    """Run one CLI, niced and single-threaded, logging the exact command line."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = ["nice", "-n", "5", *cmd]
    log.info("$ OMP_NUM_THREADS=1 %s", " ".join(full))
    subprocess.run(full, check=True, env=env)


def train_and_evaluate(data: Path, config: Path, run: Path, epochs: int | None, split: str) -> dict:
    """One variant: train from scratch, evaluate best.pt on ``split``; returns Dice and wall time."""
    if (run / "eval.json").is_file():
        log.info("%s: already done, kept", run)
        return json.loads((run / "eval.json").read_text())
    cmd = [str(BIN / "usseg-train"), "--data", str(data), "--out", str(run), "--config", str(config),
           "--no-progress", "--overwrite"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    start = time.perf_counter()
    call(cmd)
    seconds = time.perf_counter() - start
    call([str(BIN / "usseg-evaluate"), "--model", str(run / "best.pt"), "--data", str(data), "--split", split,
          "--out", str(run / "eval_test.json")])
    ev = json.loads((run / "eval_test.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    result = {"run": str(run), "config": str(config), "data": str(data), "split": split,
              "dice": ev["dice"], "mean_dice": ev["mean_dice"], "wall_s": round(seconds, 1),
              "train_s": metrics["final"]["train_seconds"], "best_epoch": metrics["final"]["best_epoch"],
              "frames": metrics["final"]["frames"], "loadavg_1m": round(os.getloadavg()[0], 2)}
    (run / "eval.json").write_text(json.dumps(result, indent=1))
    return result


def cmd_train(args: argparse.Namespace) -> int:
    """Train and evaluate each recipe in turn (one at a time); finished variants are kept."""
    overrides = json.loads(args.overrides) if args.overrides else {}
    for recipe in args.recipes:
        get_recipe(recipe)  # fail before hours of training on a typo
    for recipe in args.recipes:
        run = args.out / recipe
        config = write_config(args.base, recipe, run.parent / f"{recipe}.config.json", overrides)
        res = train_and_evaluate(args.data, config, run, args.epochs, args.split)
        log.info("%s: mean Dice %.3f (%s) in %.0f s", recipe, res["mean_dice"], res["dice"], res["wall_s"])
    return 0


def subset_ids(train_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The train ids kept at ``fraction``: a fixed shuffle, then a prefix, so smaller subsets are
    nested in larger ones and the learning curve measures size, not a different draw."""
    order = sorted(train_ids)
    random.Random(seed).shuffle(order)
    return set(order[:max(1, round(fraction * len(order)))])


def make_subset(data: Path, fraction: float, seed: int, out: Path) -> Path:
    """A mask folder that links to ``data``'s images and masks and drops train ids in split.csv;
    val and test ids are untouched, so every point of the curve is scored on the same frames."""
    with open(data / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep = subset_ids([r["id"] for r in rows if r["split"] == "train"], fraction, seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("images", "masks"):
        (out / name).symlink_to((data / name).resolve())
    shutil.copy(data / "classes.json", out / "classes.json")
    with open(out / "split.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split"])
        for r in rows:
            if r["split"] != "train" or r["id"] in keep:
                writer.writerow([r["id"], r["split"]])
    log.info("%s: %d of %d train frames", out, len(keep), sum(r["split"] == "train" for r in rows))
    return out


def cmd_subsets(args: argparse.Namespace) -> int:
    for fraction in args.fractions:
        make_subset(args.data, fraction, args.seed, args.out / f"train{int(round(fraction * 100))}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """Markdown table of every eval.json under --runs, with the preprocessing cost beside it."""
    cost = {}
    for path in args.cost or []:
        for row in json.loads(Path(path).read_text())["rows"]:
            cost.setdefault(row["recipe"], {})[row["size"]] = row["median_ms"]
    results = [json.loads(p.read_text()) for p in sorted(args.runs.glob("*/eval.json"))]
    if not results:
        log.error("no eval.json under %s", args.runs)
        return 1
    classes = list(results[0]["dice"])
    sizes = sorted({s for c in cost.values() for s in c})
    head = ["variant", *classes, "mean", *[f"prep ms {s}" for s in sizes], "train s", "best epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        name = Path(r["run"]).name
        dice = [("-" if r["dice"][c] is None else f"{r['dice'][c]:.3f}") for c in classes]
        prep = [f"{cost.get(name, {}).get(s, float('nan')):.1f}" for s in sizes]
        lines.append("| " + " | ".join([name, *dice, f"{r['mean_dice']:.3f}", *prep, f"{r['train_s']:.0f}",
                                        str(r["best_epoch"] + 1)]) + " |")
    print("\n".join(lines))
    return 0


def time_segmenter(model: Path, frames: list[np.ndarray], rounds: int, threads: int | None) -> dict:
    """End-to-end cost of Segmenter (preprocess, ONNX Runtime, post-processing, labels back at frame
    size) per 480x640 frame: the figure the 30 frames/s target is about."""
    from usseg.runtime.segmenter import Segmenter

    seg = Segmenter(model, device="cpu", threads=threads)
    for frame in frames[:2]:
        seg(frame)
    times, stages = [], {}
    for _ in range(rounds):
        for frame in frames:
            start = time.perf_counter()
            result = seg(frame)
            times.append((time.perf_counter() - start) * 1e3)
            for key, value in result.timings.items():
                stages.setdefault(key, []).append(value)
    c = seg.contract
    times.sort()
    return {"model": str(model), "precision": c.provenance.get("precision", "fp32"), "recipe": c.recipe.name,
            "input": f"{c.input.height}x{c.input.width}", "threads": threads or "default",
            "median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "fps_at_median": round(1e3 / statistics.median(times), 1),
            "stages_median_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
            "samples": len(times), "loadavg_1m": round(os.getloadavg()[0], 2)}


def cmd_speed(args: argparse.Namespace) -> int:
    """Direct timing of exported models on the benchmark suite's 480x640 phantom frames."""
    from .models import phantom_frames

    frames = phantom_frames(args.count)
    rows = []
    for model in args.models:
        for threads in args.threads:
            row = time_segmenter(model, frames, args.rounds, threads or None)
            log.info("%s", row)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"frame_size": list(frames[0].shape[:2]), "rows": rows}, indent=1))
    return 0


def frame_dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> list[float]:
    """Per-class Dice of one frame; NaN where the class is absent from both (not a miss, not a hit)."""
    out = []
    for c in range(1, classes):
        a, b = pred == c, truth == c
        total = int(a.sum() + b.sum())
        out.append(float("nan") if total == 0 else 2.0 * float((a & b).sum()) / total)
    return out


def outline(grey: np.ndarray, labels: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Class outlines over the frame: outlines, unlike filled overlays, leave the texture under
    the label visible, which is what one needs to see why a region was (mis)labelled."""
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for c, colour in enumerate(colours, start=1):
        contours, _ = cv2.findContours((labels == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, colour, 2)
    return img


def cmd_sheet(args: argparse.Namespace) -> int:
    """Per-frame Dice of usseg-infer's saved masks, and a contact sheet (truth | prediction) of the
    worst frames, the median one and the best one: the frames worth looking at."""
    colours = [(0, 255, 255), (255, 0, 255), (0, 255, 0)]
    classes = len(json.loads((args.data / "classes.json").read_text()))
    rows = []
    for path in sorted(args.infer.glob("*_mask.png")):
        item = path.name[: -len("_mask.png")]
        truth = cv2.imread(str(args.data / "masks" / f"{item}.png"), cv2.IMREAD_GRAYSCALE)
        rows.append((item, frame_dice(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), truth, classes)))
    rows.sort(key=lambda r: np.nanmean(r[1]))
    for item, dice in rows:
        print(item, " ".join(f"{d:.2f}" for d in dice))
    picks = rows[: args.worst] + [rows[len(rows) // 2], rows[-1]]
    tiles = []
    for item, dice in picks:
        grey = cv2.imread(str(args.data / "images" / f"{item}.png"), cv2.IMREAD_GRAYSCALE)
        truth = cv2.imread(str(args.data / "masks" / f"{item}.png"), cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(str(args.infer / f"{item}_mask.png"), cv2.IMREAD_GRAYSCALE)
        tile = np.hstack([outline(grey, truth, colours), outline(grey, pred, colours)])
        tile = cv2.resize(tile, (int(tile.shape[1] * args.height / tile.shape[0]), args.height))
        text = f"{item} truth | prediction  Dice " + " ".join(f"{d:.2f}" for d in dice)
        cv2.putText(tile, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(tile)
    width = max(t.shape[1] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, 2, 0, width - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles]
    cv2.imwrite(str(args.out), np.vstack(tiles), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    log.info("wrote %s (%s)", args.out, ", ".join(item for item, _ in picks))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost", help="preprocessing cost per frame and recipe")
    c.add_argument("--frames", type=Path, required=True, help="mask folder or image folder")
    c.add_argument("--size", default="240x320", help="model input size HxW")
    c.add_argument("--recipes", nargs="+", default=["seed", "realtime", "no-clahe", "no-unsharp", "nlm-small",
                                                    "nlm-tiny", "bilateral", "median", "none"])
    c.add_argument("--count", type=int, default=20, help="frames to cycle through")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--threads", type=int, default=2, help="cv2 threads (the runtime leaves cv2's default)")
    c.add_argument("--append", action="store_true", help="add rows to an existing --out file")
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(func=cmd_cost)
    t = sub.add_parser("train", help="train + evaluate one run per recipe")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--base", type=Path, required=True,
                   help="a --config JSON file, e.g. runs/demo/run/config.json (the demo profile, as make demo trains it)")
    t.add_argument("--recipes", nargs="+", required=True)
    t.add_argument("--epochs", type=int, help="override the base file's epochs (a shorter schedule)")
    t.add_argument("--overrides", help="JSON object of more TrainConfig fields, e.g. '{\"val_every\": 5}'")
    t.add_argument("--split", default="test")
    t.add_argument("--out", type=Path, required=True)
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("subsets", help="learning-curve mask folders (train ids dropped, val/test fixed)")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_subsets)
    v = sub.add_parser("speed", help="end-to-end Segmenter timing on 480x640 phantom frames")
    v.add_argument("--models", type=Path, nargs="+", required=True)
    v.add_argument("--threads", type=int, nargs="+", default=[0], help="ONNX Runtime intra-op threads; 0 = default")
    v.add_argument("--count", type=int, default=8)
    v.add_argument("--rounds", type=int, default=10)
    v.add_argument("--out", type=Path, required=True)
    v.set_defaults(func=cmd_speed)
    o = sub.add_parser("sheet", help="per-frame Dice of saved masks and a worst/median/best contact sheet")
    o.add_argument("--data", type=Path, required=True, help="the mask folder the frames came from")
    o.add_argument("--infer", type=Path, required=True, help="usseg-infer --save-masks output folder")
    o.add_argument("--worst", type=int, default=3)
    o.add_argument("--height", type=int, default=220, help="tile height in pixels")
    o.add_argument("--out", type=Path, required=True)
    o.set_defaults(func=cmd_sheet)
    b = sub.add_parser("table", help="markdown table of the finished runs")
    b.add_argument("--runs", type=Path, required=True)
    b.add_argument("--cost", nargs="*", help="cost JSON files from the 'cost' command")
    b.set_defaults(func=cmd_table)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
