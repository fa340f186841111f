"""usseg evaluate: per-class Dice and HD95 of a model on a data split, at each frame's own size.

Everything is built around a predictor, a callable frame -> label map at the frame's size, so
a checkpoint (PyTorch) and an exported model (ONNX, through the runtime's Segmenter) are scored
by the same code. For the spine classes the post-processed geometry is scored too: line
end-point error for MID and EPI, box IoU for VTB, each against the same post-processing applied
to the ground-truth mask.

Which figure is which (the JSON repeats this under "definitions"):
    dice            per-frame Dice averaged over the frames where the structure is present
                    (the figure validation selects on, and the one quoted so far)
    dice_any_frame  per-frame Dice averaged over the frames where truth or prediction has the
                    structure: a false positive on a frame without it counts as 0
    dice_aggregate  Dice over all pixels of the split (2 sum TP / (sum predicted + sum true))
    false_positive  frames without the structure where the prediction has some of it (share)
    detection_rate  frames with the structure where the prediction has some of it (share)
    hd95_px / _mm   95th-percentile Hausdorff distance, frames where both have the structure
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from usseg.runtime.cleanup import STEPS, apply_steps, cleanup_plan, content_of, describe
from usseg.runtime.cli import add_device_option, add_model_option, add_out_option, alias_main
from usseg.runtime.contract import SPINE_CLASSES, Contract, PostprocessSpec, default_postprocess
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import make_dirs
from usseg.runtime.imageio import add_max_pixels_option
from usseg.runtime.preprocess import preprocess

from .io import DataError, set_max_pixels, write_json
from .maskfolder import MaskFolder, open_mask_folder
from .metrics import DiceAccumulator, SplitScores, by_class, hd95, json_number, mean_dice

log = logging.getLogger("usseg.evaluate")

Predictor = Callable[[np.ndarray], np.ndarray]
LINES = ("mid", "epi")

DEFINITIONS = {
    "dice": "per-frame Dice averaged over the frames where the structure is present in the ground truth "
            "(MONAI DiceMetric, ignore_empty); validation selects checkpoints on it",
    "dice_any_frame": "per-frame Dice averaged over the frames where the ground truth or the prediction has the "
                      "structure; a false positive on a frame without it scores 0, frames where both lack it are skipped",
    "dice_aggregate": "Dice over all pixels of the split: 2 x sum TP / (sum predicted + sum true)",
    "false_positive": "frames without the structure in the ground truth where the prediction has some of it "
                      "(each such frame is a miss); share = frames / absent",
    "detection_rate": "share of the frames with the structure where the prediction has some of it",
    "missed": "frames with the structure where the prediction has none of it",
    "hd95_px": "95th-percentile Hausdorff distance in pixels of the frame, averaged over frames where both "
               "ground truth and prediction have the structure",
    "hd95_mm": "hd95_px times the given pixel spacing",
    "ms_per_frame": "median wall time of one prediction (preprocessing, model, labels back to frame size)",
    "size": "every score at each frame's own size (predictions are mapped back from the model's input)",
}


def flip_average(model: Any, x: Any) -> Any:
    """Softmax of ``model`` on x and on x mirrored left-right (mirrored back), averaged: BxCxHxW."""
    import torch

    probs = torch.softmax(model(x), dim=1)
    return (probs + torch.softmax(model(x.flip(-1)), dim=1).flip(-1)) / 2


def torch_predictor(model: Any, contract: Contract, device: str = "cpu", tta: bool = False) -> Predictor:
    """Checkpoint model -> predictor: preprocess at model size, argmax, the clean-up the contract
    chose on val (as the runtime's finisher runs it), labels back to the frame.

    ``tta``: average the class probabilities of the frame and of its mirror image (two forward
    passes per frame: about twice the model's share of the time).
    """
    import torch

    model = model.to(device).eval()
    spec, chosen = contract.input, cleanup_plan(contract.classes, contract.postprocess.largest_component,
                                                contract.postprocess.fill_holes)

    def predict(frame: np.ndarray) -> np.ndarray:
        x, box = preprocess(frame, contract.recipe, spec.height, spec.width)
        t = torch.from_numpy(x)[None, None].to(device)
        with torch.no_grad():
            scores = flip_average(model, t) if tta else model(t)
        labels = scores.argmax(1)[0].to(torch.uint8).cpu().numpy()
        return box.invert_labels(apply_steps(labels, chosen, content_of(box)))

    return predict


def torch_device(device: str) -> str:
    """The CLI's device names for PyTorch: ``auto`` is CUDA when there is one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("tensorrt"):
        raise UsageError(f"--device {device}: TensorRT runs exported .onnx models, not checkpoints")
    return device


def load_predictor(path: str | Path, device: str = "auto", tta: bool = False,
                   state: dict[str, Any] | None = None) -> tuple[Predictor, Contract]:
    """A checkpoint (.pt) or an exported model (.onnx) as (predictor, contract); ``tta``: mirror
    test-time augmentation (the Segmenter's ``flip_tta`` for an exported model); ``state``: the
    checkpoint already loaded from ``path``."""
    path = Path(path)
    if path.suffix == ".onnx":
        from usseg.runtime import Segmenter

        seg = Segmenter(path, device=device, flip_tta=tta)
        return (lambda frame: seg(frame).labels), seg.contract
    from .checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint

    state = load_checkpoint(path) if state is None else state
    contract = checkpoint_contract(state, path)
    return torch_predictor(model_from_checkpoint(state, path), contract, torch_device(device), tta), contract


def split_frames(model: str | Path, folder: MaskFolder, split: str,
                 state: dict[str, Any] | None) -> tuple[list[str], str]:
    """The ids to score as ``split`` and where they come from: split.csv, or, for val on a data set
    without a val split, the frames the checkpoint's run carved out of train and validated on (so
    the val Dice training reported can be checked and TTA or a threshold chosen on the same frames).
    ``state``: the loaded checkpoint, None for an exported model.
    """
    ids = folder.ids(split)
    if ids or split != "val" or not folder.ids("train"):
        return ids, "split.csv"
    if state is None:
        raise DataError(f"{folder.root / 'split.csv'}: no 'val' frames; an exported model does not record the val "
                        "its run carved out of train: evaluate the checkpoint (RUN/best.pt) instead")
    from .checkpoint import checkpoint_val_ids

    return checkpoint_val_ids(state, model, folder.ids("train")), f"the val {model} was chosen on"


def endpoint_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean distance of a line's two end points to the other's, in the better of both pairings."""
    direct = np.linalg.norm(pred - true, axis=1).mean()
    swapped = np.linalg.norm(pred - true[::-1], axis=1).mean()
    return float(min(direct, swapped))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quadrilaterals (4x2 corners)."""
    import cv2

    pa, pb = np.asarray(a, np.float32), np.asarray(b, np.float32)
    area_a, area_b = abs(cv2.contourArea(pa)), abs(cv2.contourArea(pb))
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else float("nan")


class GeometryScore:
    """Post-processed prediction vs post-processed ground truth, accumulated over frames."""

    def __init__(self, spec: PostprocessSpec) -> None:
        from usseg.runtime.postprocess import postprocess_spine  # lazy: the rest works without it

        self.spec, self.postprocess = spec, postprocess_spine
        self.values: dict[str, list[float]] = {"mid": [], "epi": [], "vtb": []}
        self.missed = dict.fromkeys(self.values, 0)
        self.spurious = dict.fromkeys(self.values, 0)

    def update(self, pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
        # The maps are at the frame's own size: the seed's area thresholds scaled to that size.
        at_frame = default_postprocess(SPINE_CLASSES, pred.shape[:2])
        spec = replace(self.spec, min_line_area=at_frame.min_line_area, min_box_area=at_frame.min_box_area)
        gp, gt = self.postprocess(pred, spec), self.postprocess(true, spec)
        frame: dict[str, float | None] = {}
        for key in self.values:
            p, t = getattr(gp, key), getattr(gt, key)
            frame[key] = None
            if p is not None and t is not None:
                frame[key] = endpoint_error(p, t) if key in LINES else box_iou(p, t)
                self.values[key].append(frame[key])
            elif t is not None:
                self.missed[key] += 1
            elif p is not None:
                self.spurious[key] += 1
        return frame

    def result(self) -> dict[str, Any]:
        out = {}
        for key, vals in self.values.items():
            name = "endpoint_error_px" if key in LINES else "box_iou"
            out[key.upper()] = {name: float(np.mean(vals)) if vals else None, "frames_both": len(vals),
                                "missed": self.missed[key], "spurious": self.spurious[key]}
        return out


def evaluate(predictor: Predictor, folder: MaskFolder, split: str = "test",
             postprocess: PostprocessSpec | None = None, spacing: float | None = None,
             progress: bool = False, ids: list[str] | None = None) -> dict[str, Any]:
    """Score ``predictor`` on ``split`` of ``folder`` at each frame's original size.

    Dice: MONAI DiceMetric (seed aggregation, see metrics.py). HD95: MONAI
    HausdorffDistanceMetric(percentile=95) per frame, averaged over frames where both the truth
    and the prediction have the class (frames where only the truth has it are counted as missed).
    ``spacing`` (mm per pixel) adds HD95 in mm; ``postprocess`` of kind "spine" adds geometry.
    Besides the present-frame Dice: Dice over any frame with the structure, over all pixels,
    false-positive frames and detection rate (see the module docstring and ``DEFINITIONS``).
    ``ids``: the frames to score under the name ``split`` instead of split.csv's (the val a run
    carved out of train, ``split_frames``).
    """
    ids = folder.ids(split) if ids is None else ids
    if not ids:
        present = sorted(set(folder.splits.values()))
        raise DataError(f"{folder.root / 'split.csv'}: no {split!r} frames; this data set has {present}")
    n = len(folder.classes)
    dice, hds, missed = DiceAccumulator(n), [], np.zeros(n - 1, np.int64)
    scores, seconds = SplitScores(n), []
    geometry = GeometryScore(postprocess) if postprocess is not None and postprocess.kind == "spine" else None
    frames = []
    for item_id in tqdm(ids, desc=f"evaluate {split}", unit="frame", disable=not progress):
        image, truth = folder.load(item_id)
        start = time.perf_counter()
        pred = np.ascontiguousarray(predictor(image), dtype=np.uint8)
        seconds.append(time.perf_counter() - start)
        if pred.shape != truth.shape:
            raise ValueError(f"predictor returned {pred.shape} for frame {item_id} of size {truth.shape}")
        frame_dice = dice.update(pred, truth)[0]
        frame_hd = hd95(pred, truth, n)
        hds.append(frame_hd)
        gt_has = np.array([(truth == c).any() for c in range(1, n)])
        pred_has = np.array([(pred == c).any() for c in range(1, n)])
        missed += gt_has & ~pred_has
        any_dice = scores.update(pred, truth)
        entry = {"id": item_id, "dice": by_class(frame_dice, folder.classes),
                 "dice_any_frame": by_class(any_dice, folder.classes), "hd95_px": by_class(frame_hd, folder.classes)}
        if geometry is not None:
            entry["geometry"] = geometry.update(pred, truth)
        frames.append(entry)
    per_class = dice.result()
    hd_px = _nanmean_rows(np.array(hds))
    names = folder.classes[1:]
    any_frame, aggregate = scores.any_frame_dice(), scores.aggregate_dice()
    result: dict[str, Any] = {
        "split": split, "frames": len(ids), "classes": list(folder.classes),
        "dice": by_class(per_class, folder.classes), "mean_dice": json_number(mean_dice(per_class)),
        "dice_any_frame": by_class(any_frame, folder.classes), "mean_dice_any_frame": json_number(mean_dice(any_frame)),
        "dice_aggregate": by_class(aggregate, folder.classes), "mean_dice_aggregate": json_number(mean_dice(aggregate)),
        "false_positive": {name: {"frames": int(fp), "absent": int(ab), "share": json_number(sh)}
                           for name, fp, ab, sh in zip(names, scores.false_pos, scores.absent,
                                                       scores.false_positive_share())},
        "detection_rate": by_class(scores.detection_rate(), folder.classes),
        "hd95_px": by_class(hd_px, folder.classes),
        "missed": {name: int(m) for name, m in zip(names, missed)},
        "ms_per_frame": round(1000 * float(np.median(seconds)), 2),
        "definitions": DEFINITIONS,
    }
    if spacing is not None:
        result["spacing_mm"] = spacing
        result["hd95_mm"] = by_class(hd_px * spacing, folder.classes)
    if geometry is not None:
        result["geometry"] = geometry.result()
    result["per_frame"] = frames
    return result


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Column means over the frames where the value exists; NaN for a column with none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is an answer, not an error
        return np.nanmean(values, axis=0)


REPORT_LEGEND = (
    "Dice present: mean over frames with the structure | Dice any: mean over frames where truth or prediction\n"
    "has it (a false positive scores 0) | Dice pixels: over all pixels of the split | FP frames: frames without\n"
    "the structure where it was predicted / frames without it | detected: frames with it where it was predicted")


def format_report(result: dict[str, Any]) -> str:
    """The result as a table (one row per class, each figure named), plus the geometry when there is one."""
    mm = "hd95_mm" in result
    head = (f"{'class':12s} {'Dice present':>12s} {'Dice any':>8s} {'Dice pixels':>11s} {'FP frames':>10s} "
            f"{'detected':>8s} {'HD95 px':>8s}" + (f" {'HD95 mm':>8s}" if mm else ""))
    lines = [head]
    for name in result["classes"][1:]:
        fp = result["false_positive"][name]
        row = (f"{name:12s} {_cell(result['dice'][name], 4):>12s} {_cell(result['dice_any_frame'][name], 4):>8s} "
               f"{_cell(result['dice_aggregate'][name], 4):>11s} {fp['frames']:>5d}/{fp['absent']:<4d} "
               f"{_cell(result['detection_rate'][name], 3):>8s} {_cell(result['hd95_px'][name], 1):>8s}")
        if mm:
            row += f" {_cell(result['hd95_mm'][name], 2):>8s}"
        lines.append(row)
    lines.append(f"{'mean':12s} {_cell(result['mean_dice'], 4):>12s} {_cell(result['mean_dice_any_frame'], 4):>8s} "
                 f"{_cell(result['mean_dice_aggregate'], 4):>11s}")
    lines.append(REPORT_LEGEND)
    for key, g in result.get("geometry", {}).items():
        metric, value = next(iter(g.items()))
        lines.append(f"{key} {metric.replace('_', ' ')}: {_cell(value, 3)} ({g['frames_both']} frames with both, "
                     f"{g['missed']} missed, {g['spurious']} spurious)")
    return "\n".join(lines)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, "checkpoint (RUN/best.pt) or exported .onnx model")
    p.add_argument("--data", type=Path, required=True, help="mask folder (see usseg prepare)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="default: test; val on a data set without a val split: the frames the checkpoint's run "
                        "carved out of train and chose on")
    p.add_argument("--spacing", type=float, help="pixel spacing in mm, adds HD95 in mm")
    add_out_option(p, "output folder: eval_<split>.json with per-frame scores", required=False)
    add_device_option(p)
    p.add_argument("--tta", action="store_true",
                   help="mirror test-time augmentation: average the class scores of each frame and its left-right "
                        "mirror (two forward passes per frame; ms_per_frame in the JSON gives the cost)")
    add_max_pixels_option(p)


def run(args: argparse.Namespace) -> int:
    set_max_pixels(args.max_pixels)
    if args.spacing is not None and not args.spacing > 0:
        raise UsageError(f"--spacing {args.spacing}: must be > 0 (mm per pixel)")
    folder = open_mask_folder(args.data)
    if args.out is not None:
        make_dirs(args.out)
    state = None
    if Path(args.model).suffix != ".onnx":
        from .checkpoint import load_checkpoint

        state = load_checkpoint(args.model)   # read once: the val frames and the model
    ids, source = split_frames(args.model, folder, args.split, state)
    predictor, contract = load_predictor(args.model, args.device, args.tta, state)
    if tuple(contract.classes) != tuple(folder.classes):
        raise DataError(f"{args.model}: classes {list(contract.classes)} differ from {args.data}'s {list(folder.classes)}")
    result = evaluate(predictor, folder, args.split, contract.postprocess, args.spacing, progress=True, ids=ids)
    chosen = {step: list(getattr(contract.postprocess, step)) for step in STEPS}
    result = {"model": str(args.model), "data": str(args.data), "tta": bool(args.tta), "frames_from": source,
              "postprocess_chosen_on_val": chosen, **result}
    print(f"{args.model} on {args.data} ({args.split}, {result['frames']} frames from {source}, at original size"
          f"{', mirror TTA' if args.tta else ''}; {result['ms_per_frame']:.1f} ms per frame)")
    print(f"post-processing chosen on val, applied: {describe(chosen)}")
    print(format_report(result))
    if args.out is not None:
        path = args.out / f"eval_{args.split}{'_tta' if args.tta else ''}.json"
        write_json(path, result)
        print(f"wrote {path}")
    return 0


main = alias_main("evaluate")


if __name__ == "__main__":
    raise SystemExit(main())
