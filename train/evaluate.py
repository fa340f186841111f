"""usseg-evaluate: per-class Dice and HD95 of a model on a data split, at each frame's own size.

Everything is built around a predictor, a callable frame -> label map at the frame's size, so
a checkpoint (PyTorch) and an exported model (ONNX, through the runtime's Segmenter) are scored
by the same code. For the spine classes the post-processed geometry is scored too: line
end-point error for MID and EPI, box IoU for VTB, each against the same post-processing applied
to the ground-truth mask.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from usseg.runtime.contract import Contract, PostprocessSpec
from usseg.runtime.preprocess import preprocess

from .io import DataError, write_json
from .maskfolder import MaskFolder, open_mask_folder
from .metrics import DiceAccumulator, by_class, hd95, json_number, mean_dice

log = logging.getLogger("usseg.evaluate")

Predictor = Callable[[np.ndarray], np.ndarray]
LINES = ("mid", "epi")


def torch_predictor(model: Any, contract: Contract, device: str = "cpu") -> Predictor:
    """Checkpoint model -> predictor: preprocess at model size, argmax, labels back to the frame."""
    import torch

    model = model.to(device).eval()
    spec = contract.input

    def predict(frame: np.ndarray) -> np.ndarray:
        x, box = preprocess(frame, contract.recipe, spec.height, spec.width)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None, None].to(device))
        return box.invert_labels(logits.argmax(1)[0].to(torch.uint8).cpu().numpy())

    return predict


def load_predictor(path: str | Path, device: str = "cpu") -> tuple[Predictor, Contract]:
    """A checkpoint (.pt) or an exported model (.onnx) as (predictor, contract)."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            from usseg.runtime import Segmenter
        except ImportError:
            from usseg.runtime.segmenter import Segmenter
        seg = Segmenter(path, device=device)
        return (lambda frame: seg(frame).labels), seg.contract
    from .checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint

    state = load_checkpoint(path)
    contract = checkpoint_contract(state, path)
    return torch_predictor(model_from_checkpoint(state, path), contract, device), contract


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
        gp, gt = self.postprocess(pred, self.spec), self.postprocess(true, self.spec)
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
             progress: bool = False) -> dict[str, Any]:
    """Score ``predictor`` on ``split`` of ``folder`` at each frame's original size.

    Dice: MONAI DiceMetric (seed aggregation, see metrics.py). HD95: MONAI
    HausdorffDistanceMetric(percentile=95) per frame, averaged over frames where both the truth
    and the prediction have the class (frames where only the truth has it are counted as missed).
    ``spacing`` (mm per pixel) adds HD95 in mm; ``postprocess`` of kind "spine" adds geometry.
    """
    ids = folder.ids(split)
    if not ids:
        present = sorted(set(folder.splits.values()))
        raise DataError(f"{folder.root / 'split.csv'}: no {split!r} frames; this data set has {present}")
    n = len(folder.classes)
    dice, hds, missed = DiceAccumulator(n), [], np.zeros(n - 1, np.int64)
    geometry = GeometryScore(postprocess) if postprocess is not None and postprocess.kind == "spine" else None
    frames = []
    for item_id in tqdm(ids, desc=f"evaluate {split}", unit="frame", disable=not progress):
        image, truth = folder.load(item_id)
        pred = np.ascontiguousarray(predictor(image), dtype=np.uint8)
        if pred.shape != truth.shape:
            raise ValueError(f"predictor returned {pred.shape} for frame {item_id} of size {truth.shape}")
        frame_dice = dice.update(pred, truth)[0]
        frame_hd = hd95(pred, truth, n)
        hds.append(frame_hd)
        gt_has = np.array([(truth == c).any() for c in range(1, n)])
        pred_has = np.array([(pred == c).any() for c in range(1, n)])
        missed += gt_has & ~pred_has
        entry = {"id": item_id, "dice": by_class(frame_dice, folder.classes), "hd95_px": by_class(frame_hd, folder.classes)}
        if geometry is not None:
            entry["geometry"] = geometry.update(pred, truth)
        frames.append(entry)
    per_class = dice.result()
    hd_px = _nanmean_rows(np.array(hds))
    result: dict[str, Any] = {
        "split": split, "frames": len(ids), "classes": list(folder.classes),
        "dice": by_class(per_class, folder.classes), "mean_dice": json_number(mean_dice(per_class)),
        "hd95_px": by_class(hd_px, folder.classes),
        "missed": {name: int(m) for name, m in zip(folder.classes[1:], missed)},
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


def format_report(result: dict[str, Any]) -> str:
    """The result as a small table (one row per class), plus the geometry when there is one."""
    mm = "hd95_mm" in result
    head = f"{'class':12s} {'Dice':>7s} {'HD95 px':>8s}" + (f" {'HD95 mm':>8s}" if mm else "") + "  missed"
    lines = [head]
    for name in result["classes"][1:]:
        row = f"{name:12s} {_cell(result['dice'][name], 4):>7s} {_cell(result['hd95_px'][name], 1):>8s}"
        if mm:
            row += f" {_cell(result['hd95_mm'][name], 2):>8s}"
        lines.append(row + f"  {result['missed'][name]}")
    lines.append(f"{'mean':12s} {_cell(result['mean_dice'], 4):>7s}")
    for key, g in result.get("geometry", {}).items():
        metric, value = next(iter(g.items()))
        lines.append(f"{key} {metric.replace('_', ' ')}: {_cell(value, 3)} ({g['frames_both']} frames with both, "
                     f"{g['missed']} missed, {g['spurious']} spurious)")
    return "\n".join(lines)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usseg-evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="checkpoint (RUN/best.pt) or exported .onnx")
    p.add_argument("--data", type=Path, required=True, help="mask folder (see usseg-prepare)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="default: test")
    p.add_argument("--spacing", type=float, help="pixel spacing in mm, adds HD95 in mm")
    p.add_argument("--out", type=Path, help="write the full result (with per-frame scores) as JSON")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    return p


def run(args: argparse.Namespace) -> int:
    if args.spacing is not None and not args.spacing > 0:
        raise ValueError(f"--spacing {args.spacing}: must be > 0 (mm per pixel)")
    folder = open_mask_folder(args.data)
    predictor, contract = load_predictor(args.model, args.device)
    if tuple(contract.classes) != tuple(folder.classes):
        raise DataError(f"{args.model}: classes {list(contract.classes)} differ from {args.data}'s {list(folder.classes)}")
    result = evaluate(predictor, folder, args.split, contract.postprocess, args.spacing, progress=True)
    result = {"model": str(args.model), "data": str(args.data), **result}
    print(f"{args.model} on {args.data} ({args.split}, {result['frames']} frames, at original size)")
    print(format_report(result))
    if args.out is not None:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
