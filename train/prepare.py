"""usseg prepare: labelled frames from a labelling tool (or an existing mask folder) -> a split mask folder.

    usseg prepare --annotations phantom/annotations.json --images phantom/images --out data
    usseg prepare --from coco --annotations instances.json --images images --out data
    usseg prepare --from labelme --annotations labelme/ --out data --classes nerve,vessel
    usseg prepare --masks-dir data --val 0.1 --test 0.2 --seed 42      # re-split in place

Sources (--from): seed, coco, cvat, labelme, nnunet, masks (``usseg.train.importers``). A bad
entry is reported by file and key and skipped (--strict: the run stops and writes nothing); the
output folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usseg.runtime.cli import add_out_option, alias_main
from usseg.runtime.errors import UsageError
from usseg.runtime.fileio import TMP_MARK, output_lock, replace_dir
from usseg.runtime.imageio import add_max_pixels_option
from usseg.runtime.interrupt import EXIT_CODES, stop_signals, stopped_by
from usseg.runtime.outfolder import check_out, overlap

from .groups import compile_pattern, frame_groups
from .importers import FORMATS, Format, Imported, SourceOptions, get_format, read_source
from .io import DataError, set_max_pixels
from .leakage import near_duplicates, thumbnail
from .maskfolder import SPLITS, MaskFolder, open_mask_folder, write_classes, write_item, write_split
from .problems import EntryError, ProblemLog
from .splits import grouped_split, presence_matrix, stratified_split

log = logging.getLogger("usseg.prepare")

OWNER_FILE = ".usseg-owner"  # in a temporary output folder: the pid of the run writing it


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


# -- options ------------------------------------------------------------------------------------------
def parse_classes(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of class names, e.g. nerve,vessel")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    names = [f.name for f in FORMATS]
    p.add_argument("--from", dest="source_format", choices=names, metavar="FORMAT",
                   help="the annotation source: " + "; ".join(f"{f.name}: {f.reads}" for f in FORMATS)
                   + " (default: seed with --annotations, masks with --masks-dir)")
    p.add_argument("--annotations", type=Path, metavar="PATH",
                   help="the labelling tool's export: a file (seed, COCO, CVAT XML) or a folder (LabelMe, "
                        "CVAT mask export, nnU-Net raw data set)")
    p.add_argument("--masks-dir", type=Path, help="an existing mask folder to copy to --out or (re)split in place")
    p.add_argument("--images", type=Path, help="image folder (seed and COCO; optional for CVAT and LabelMe)")
    add_out_option(p, "output mask folder (default with --masks-dir: rewrite its split.csv)", required=False)
    p.add_argument("--classes", type=parse_classes, metavar="A,B,...",
                   help="class names in index order (1, 2, ...): labels outside the list are reported as unknown "
                        "(default: the labels the tool declares; seed: MID,VTB,EPI)")
    p.add_argument("--line-width", type=int, default=10, metavar="PX",
                   help="width in pixels of lines and polylines (CVAT, LabelMe; default 10, the seed's)")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    p.add_argument("--test", type=float, default=0.2, help="test fraction (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    together = p.add_mutually_exclusive_group()
    together.add_argument("--groups", type=Path, metavar="FILE.csv",
                          help="id,group per frame (a patient, a sweep): every group lands on one side of the split")
    together.add_argument("--group-pattern", metavar="REGEX",
                          help="the group from each id (file stem): the first capture group, or the whole match")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    add_max_pixels_option(p)


def chosen_format(args: argparse.Namespace) -> Format:
    if args.source_format is not None:
        return get_format(args.source_format)
    if args.annotations is not None and args.masks_dir is not None:
        raise UsageError("--annotations and --masks-dir: give one source")
    if args.annotations is None and args.masks_dir is None:
        raise UsageError("give a source: --annotations PATH (with --from FORMAT; default seed) or --masks-dir DIR")
    return get_format("seed" if args.annotations is not None else "masks")


def _is(path: Path, kind: str) -> bool:
    return path.is_file() if kind == "file" else path.is_dir() if kind == "folder" else path.exists()


def check_arguments(args: argparse.Namespace) -> Format:
    """The options that make no sense, refused before any file is read; returns the source format."""
    fmt = chosen_format(args)
    other = "--masks-dir" if fmt.source == "--annotations" else "--annotations"
    given = args.annotations if fmt.source == "--annotations" else args.masks_dir
    if given is None:
        raise UsageError(f"--from {fmt.name} reads {fmt.source}")
    if (args.masks_dir if other == "--masks-dir" else args.annotations) is not None:
        raise UsageError(f"{other} does not go with --from {fmt.name} (it reads {fmt.source})")
    if fmt.images == "required" and args.images is None:
        raise UsageError(f"--from {fmt.name} needs --images (the folder of the annotated images)")
    if fmt.images == "unused" and args.images is not None:
        raise UsageError(f"--images goes with --annotations, not with --from {fmt.name}"
                         if fmt.name != "masks" else "--images goes with --annotations, not with --masks-dir")
    if fmt.name != "masks" and args.out is None:
        raise UsageError(f"{fmt.source} needs --out")
    if not 1 <= args.line_width <= 255:
        raise UsageError(f"--line-width {args.line_width}: must be 1 to 255 pixels")
    for name, value in (("--val", args.val), ("--test", args.test)):
        if not (math.isfinite(value) and 0 <= value < 1):
            raise UsageError(f"{name} {value}: must be a fraction in [0, 1)")
    if not args.val + args.test < 1:
        raise UsageError(f"--val {args.val} and --test {args.test}: must sum to less than 1 (training needs frames)")
    if args.group_pattern is not None:
        compile_pattern(args.group_pattern)
    for name, path, kind in ((fmt.source, given, fmt.source_kind), ("--images", args.images, "folder"),
                             ("--groups", args.groups, "file")):
        if path is not None and not _is(path, kind):
            raise UsageError(f"{name} {path}: " + (f"not a {kind}" if path.exists() else f"{kind} not found"))
    return fmt


# -- temporaries a stopped run left behind ----------------------------------------------------------------
def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(folder: Path) -> int | None:
    try:
        return int((folder / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def remove_stale_temporaries(target: Path) -> None:
    """Remove what a killed run writing ``target`` left beside it: its temporary folder (unless the
    run that owns it is still going), a temporary file, or the previous folder set aside during the
    final swap (put back when ``target`` is gone, else removed)."""
    if not target.parent.is_dir():
        return
    prefix = f".{target.name}."
    for entry in sorted(target.parent.iterdir()):
        if not (entry.name.startswith(prefix) and TMP_MARK in entry.name) or entry.is_symlink():
            continue
        if entry.is_dir():
            owner = _owner(entry)
            if owner is not None and owner != os.getpid() and _running(owner):
                continue
            if entry.name.endswith(".old") and not target.exists():
                entry.rename(target)
                log.warning("put back %s: a run stopped while replacing it had set it aside as %s", target, entry.name)
                continue
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.warning("removed %s, left behind by a run that was stopped", entry)


# -- reading the source ------------------------------------------------------------------------------------
@dataclass
class Collected:
    """What prepare keeps of each frame it wrote: the classes present, a thumbnail for the leakage
    check, and the split the source fixes (if any)."""

    present: dict[str, set[int]] = field(default_factory=dict)
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.present)


def collect(imported: Imported, tmp: Path | None, problems: ProblemLog) -> Collected:
    """Write each frame into ``tmp`` (None: only read them). A key given twice is a bad entry,
    both frames dropped."""
    got = Collected()
    present, fixed = got.present, got.fixed
    dropped: set[str] = set()
    for frame in imported.frames:
        if frame.key in present or frame.key in dropped:
            problems.report(EntryError(f"id {frame.key!r}: given by two frames of the source; which one is meant "
                                       f"is unclear", "duplicate"))
            if frame.key in present:
                del present[frame.key], got.thumbs[frame.key]
                fixed.pop(frame.key, None)
                dropped.add(frame.key)
                if tmp is not None:
                    for sub in ("images", "masks"):
                        (tmp / sub / f"{frame.key}.png").unlink(missing_ok=True)
            continue
        if tmp is not None:
            write_item(tmp, frame.key, frame.image, frame.mask)
        present[frame.key] = set(np.unique(frame.mask).tolist())
        got.thumbs[frame.key] = thumbnail(frame.image)
        if frame.split is not None:
            fixed[frame.key] = frame.split
    return got


def assign_splits(got: Collected, classes: tuple[str, ...], args: argparse.Namespace
                  ) -> tuple[dict[str, str], dict[str, str] | None]:
    """Fixed splits kept; the other frames split train / val / test, stratified on class presence,
    with each group on one side when groups are given (a group with a fixed frame follows it).
    Returns the splits and each id's group (None without groups)."""
    ids, present, fixed = got.ids, list(got.present.values()), got.fixed
    groups = None
    if args.groups is not None or args.group_pattern is not None:
        groups = dict(zip(ids, frame_groups(ids, args.groups, args.group_pattern)))
        held = {groups[i]: split for i, split in fixed.items()}
        fixed = {**fixed, **{i: held[g] for i, g in groups.items() if g in held}}
    free = [i for i in ids if i not in fixed]
    presence = presence_matrix([p for i, p in zip(ids, present) if i not in fixed], len(classes))
    try:
        if not free:
            splits = {}
        elif groups is not None:
            splits = grouped_split(free, presence, [groups[i] for i in free], args.val, args.test, args.seed)
        else:
            splits = stratified_split(free, presence, args.val, args.test, args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return {**splits, **fixed}, groups


def group_report(splits: dict[str, str], groups: dict[str, str]) -> str:
    """How many groups and frames each side has."""
    parts = []
    for split in SPLITS:
        ids = [i for i, s in splits.items() if s == split]
        parts.append(f"{split} {len({groups[i] for i in ids})} groups, {len(ids)} frames")
    return f"groups ({len(set(groups.values()))}), each on one side: " + " | ".join(parts)


def run(args: argparse.Namespace) -> int:
    set_max_pixels(args.max_pixels)
    fmt = check_arguments(args)
    source = args.annotations if fmt.source == "--annotations" else args.masks_dir
    out = args.out
    in_place = fmt.name == "masks" and (out is None or overlap(out, args.masks_dir) == "is")
    target = args.masks_dir / "split.csv" if in_place else out
    remove_stale_temporaries(target)
    if not in_place:
        kind = "annotation file" if args.annotations is not None and args.annotations.is_file() else "annotation folder"
        inputs = {kind: args.annotations, "image folder": args.images, "mask folder": args.masks_dir,
                  "group file": args.groups}
        check_out(out, {what: path for what, path in inputs.items() if path is not None}, args.overwrite,
                  own=("classes.json", "split.csv"), what="mask folder", writer="usseg prepare")
    options = SourceOptions(args.annotations, args.images, args.masks_dir, args.classes, args.line_width)
    problems = ProblemLog(strict=args.strict)
    try:
        with output_lock(args.masks_dir if in_place else out, "usseg prepare"), stop_signals():
            imported = read_source(fmt, options, problems)
            if in_place:
                got = collect(imported, None, problems)
                if not got.ids:
                    raise DataError(f"{source}: no usable frames")
                splits, groups = assign_splits(got, imported.classes, args)
                write_split(target, splits)
                target = args.masks_dir
            else:
                with replace_dir(out) as tmp:
                    (tmp / OWNER_FILE).write_text(f"{os.getpid()}\n")
                    got = collect(imported, tmp, problems)
                    if not got.ids:
                        raise DataError(f"{source}: no usable frames")
                    write_classes(tmp, imported.classes)
                    splits, groups = assign_splits(got, imported.classes, args)
                    write_split(tmp / "split.csv", splits)
                    (tmp / OWNER_FILE).unlink()
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the temporary folder is gone with the block
        how = stopped_by(exc)
        log.error("stopped by %s; nothing was written and the temporary files were removed", how)
        return EXIT_CODES[how]
    folder = open_mask_folder(target)
    print(f"wrote {target}: {len(folder.splits)} frames, classes {list(folder.classes)}")
    for line in class_balance(folder):
        print("  " + line)
    if groups is not None:
        print("  " + group_report(splits, groups))
    leakage = near_duplicates(got.thumbs, splits)
    print("  " + leakage.summary())
    if leakage.warning():
        log.warning("%s", leakage.warning())
    for line in problems.summary():
        print(line)
    return 1 if problems.total else 0


main = alias_main("prepare")


if __name__ == "__main__":
    raise SystemExit(main())
