"""usseg prepare: seed-format annotations (or an existing mask folder) -> a split mask folder.

    usseg prepare --annotations phantom/annotations.json --images phantom/images --out data
    usseg prepare --masks-dir data --val 0.1 --test 0.2 --seed 42      # re-split in place
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from usseg.runtime.cli import add_out_option, alias_main
from usseg.runtime.contract import SPINE_CLASSES
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import TMP_MARK, replace_dir

from .io import DataError
from .maskfolder import (
    SPLITS,
    MaskFolder,
    id_problem,
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
    ids = []
    for path in sorted((masks_dir / "masks").glob("*.png")):
        problem = id_problem(path.stem)
        if problem is None:
            ids.append(path.stem)
        elif TMP_MARK not in path.name:  # a temporary a killed run left behind is no mask
            log.warning("skipped: %s: %s cannot be an id: %s", path, repr(path.stem), problem)
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


def check_arguments(args: argparse.Namespace) -> None:
    """The options that make no sense, refused before any file is read."""
    if args.annotations is not None and (args.images is None or args.out is None):
        raise UsageError("--annotations needs --images and --out")
    if args.masks_dir is not None and args.images is not None:
        raise UsageError("--images goes with --annotations, not with --masks-dir")
    for name, value in (("--val", args.val), ("--test", args.test)):
        if not (math.isfinite(value) and 0 <= value < 1):
            raise UsageError(f"{name} {value}: must be a fraction in [0, 1)")
    if not args.val + args.test < 1:
        raise UsageError(f"--val {args.val} and --test {args.test}: must sum to less than 1 (training needs frames)")
    for name, path, kind in (("--annotations", args.annotations, "file"), ("--images", args.images, "folder"),
                             ("--masks-dir", args.masks_dir, "folder")):
        if path is not None and not (path.is_file() if kind == "file" else path.is_dir()):
            raise UsageError(f"{name} {path}: " + (f"not a {kind}" if path.exists() else f"{kind} not found"))


def _overlap(out: Path, source: Path) -> str | None:
    """How ``out`` overlaps ``source`` (None when they are apart); both taken with links resolved."""
    o, s = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    if o == s:
        return "is"
    if s.is_relative_to(o):
        return "contains"
    if o.is_relative_to(s) and s.is_dir():
        return "is inside"
    return None


def check_out(out: Path, inputs: dict[str, Path], overwrite: bool) -> None:
    """Refuse an --out that would destroy an input or a folder prepare did not write, before
    anything is touched: replacing --out deletes what it holds."""
    for what, source in inputs.items():
        how = _overlap(out, source)
        if how is not None:
            raise UsageError(f"--out {out} {how} the {what} {source}; the output folder must lie apart from "
                             f"the inputs, because it is replaced as a whole")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.exists():
        if not overwrite:
            raise UsageError(f"--out {out}: already exists (pass --overwrite to replace it)")
        if any(out.iterdir()) and not ((out / "classes.json").is_file() and (out / "split.csv").is_file()):
            raise UsageError(f"--out {out}: exists and is not a mask folder (no classes.json and split.csv); "
                             f"--overwrite replaces only a folder that usseg prepare wrote, or an empty one")
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot be created ({parent} is not a writable folder)")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    out = args.out
    in_place = args.masks_dir is not None and (out is None or _overlap(out, args.masks_dir) == "is")
    if not in_place:
        inputs = {"annotation file": args.annotations, "image folder": args.images, "mask folder": args.masks_dir}
        check_out(out, {what: path for what, path in inputs.items() if path is not None}, args.overwrite)
    problems: list[str] = []
    if in_place:
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
