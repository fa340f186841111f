"""usseg prepare: seed-format annotations (or an existing mask folder) -> a split mask folder.

    usseg prepare --annotations phantom/annotations.json --images phantom/images --out data
    usseg prepare --masks-dir data --val 0.1 --test 0.2 --seed 42      # re-split in place
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from usseg.runtime.cli import add_out_option, alias_main
from usseg.runtime.contract import SPINE_CLASSES
from usseg.runtime.fileio import replace_dir

from .io import DataError
from .maskfolder import (
    SPLITS,
    MaskFolder,
    open_mask_folder,
    read_classes,
    write_classes,
    write_item,
    write_split,
)
from .seedformat import iter_seed_dataset
from .splits import presence_matrix, stratified_split

log = logging.getLogger("usseg.prepare")


def class_balance(folder: MaskFolder) -> list[str]:
    """One line per split: frames, and per class the frames containing it and its pixel share."""
    lines = []
    for split in SPLITS:
        ids = folder.ids(split)
        pixels = np.zeros(len(folder.classes), np.int64)
        frames = np.zeros(len(folder.classes), np.int64)
        for item_id in ids:
            _, mask = folder.load(item_id)
            counts = np.bincount(mask.ravel(), minlength=len(folder.classes))
            pixels += counts
            frames += counts > 0
        total = max(int(pixels.sum()), 1)
        parts = [f"{name} {frames[c]}/{len(ids)} ({100 * pixels[c] / total:.1f} %)"
                 for c, name in enumerate(folder.classes) if c > 0]
        lines.append(f"{split:5s} {len(ids):4d} frames | " + " | ".join(parts))
    return lines


def _present(mask: np.ndarray) -> set[int]:
    return set(np.unique(mask).tolist())


def convert_seed(annotations: Path, images: Path, tmp: Path,
                 strict: bool) -> tuple[list[str], list[set[int]], list[str]]:
    problems: list[str] = []
    ids, present = [], []
    for item in iter_seed_dataset(annotations, images, strict=strict, problems=problems):
        write_item(tmp, item.key, item.image, item.mask)
        ids.append(item.key)
        present.append(_present(item.mask))
    write_classes(tmp, SPINE_CLASSES)
    return ids, present, problems


def resplit_masks(masks_dir: Path) -> tuple[list[str], list[set[int]], tuple[str, ...]]:
    classes = read_classes(masks_dir / "classes.json")
    ids = sorted(p.stem for p in (masks_dir / "masks").glob("*.png"))
    if not ids:
        raise DataError(f"{masks_dir / 'masks'}: no mask PNGs found")
    folder = MaskFolder(masks_dir, classes, {i: "train" for i in ids})
    present = [_present(folder.load(i)[1]) for i in ids]
    return ids, present, classes


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--annotations", type=Path, help="seed-format annotations.json")
    src.add_argument("--masks-dir", type=Path, help="an existing mask folder to (re)split")
    p.add_argument("--images", type=Path, help="image folder for --annotations")
    add_out_option(p, "output mask folder (default with --masks-dir: rewrite its split.csv)", required=False)
    p.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    p.add_argument("--test", type=float, default=0.2, help="test fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    if args.annotations is not None and (args.images is None or args.out is None):
        raise DataError("--annotations needs --images and --out")
    out = args.out
    if out is not None and out.exists() and not args.overwrite and out != args.masks_dir:
        raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
    problems: list[str] = []
    if args.masks_dir is not None and (out is None or out.resolve() == args.masks_dir.resolve()):
        ids, present, classes = resplit_masks(args.masks_dir)
        splits = stratified_split(ids, presence_matrix(present, len(classes)), args.val, args.test, args.seed)
        write_split(args.masks_dir / "split.csv", splits)
        target = args.masks_dir
    else:
        with replace_dir(out) as tmp:
            if args.annotations is not None:
                ids, present, problems = convert_seed(args.annotations, args.images, tmp, args.strict)
                classes = SPINE_CLASSES
            else:
                ids, present, classes = resplit_masks(args.masks_dir)
                for sub in ("images", "masks"):
                    shutil.copytree(args.masks_dir / sub, tmp / sub)
                write_classes(tmp, classes)
            if not ids:
                raise DataError(f"{args.annotations or args.masks_dir}: no usable frames")
            splits = stratified_split(ids, presence_matrix(present, len(classes)), args.val, args.test, args.seed)
            write_split(tmp / "split.csv", splits)
        target = out
    folder = open_mask_folder(target)
    print(f"wrote {target}: {len(folder.splits)} frames, classes {list(folder.classes)}")
    for line in class_balance(folder):
        print("  " + line)
    if problems:
        print(f"skipped {len(problems)} bad entr{'y' if len(problems) == 1 else 'ies'} (see warnings above)")
        return 1
    return 0


main = alias_main("prepare")


if __name__ == "__main__":
    raise SystemExit(main())
