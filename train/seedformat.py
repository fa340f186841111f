"""Reader for the seed's annotation format: ``annotations.json`` + an image folder.

Each key of the JSON object is an image name without extension; its value is a list of
``[label, shape, [[x1, y1], [x2, y2]]]``. Masks are drawn the way the seed drew them (10-px lines,
filled rectangles, JSON order, later over earlier), but on each image's own canvas.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from usseg.runtime.contract import SPINE_CLASSES

from .io import DataError, read_grey8
from .maskfolder import id_problem
from .problems import EntryError, ProblemLog

log = logging.getLogger(__name__)

LABELS = {name: index for index, name in enumerate(SPINE_CLASSES) if index > 0}
SHAPES = ("line", "rect")
LINE_THICKNESS = 10
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Shape:
    label: str
    kind: str
    p1: tuple[int, int]
    p2: tuple[int, int]


@dataclass(frozen=True)
class SeedItem:
    key: str
    image_path: Path
    image: np.ndarray  # 8-bit grey
    mask: np.ndarray   # uint8 class index per pixel


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once (``json`` keeps the last)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        self.duplicates = sorted({k for k, _ in pairs if k in seen or seen.add(k)})


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Parse annotations.json; the whole file is unusable when it is not a JSON object. Keys given
    more than once are listed in the result's ``duplicates``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes(), object_pairs_hook=_Object)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an annotation file") from None
    except ValueError as exc:  # bad JSON, bad text encoding, an integer of thousands of digits
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: malformed JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of image name -> shapes, got {type(data).__name__}")
    return data


def check_key(key: str, where: str) -> None:
    """A key names image files (images/<key>.png): it must be a plain file name."""
    problem = id_problem(key)
    if problem is not None:
        raise EntryError(f"{where}: not a plain file name ({problem}); keys are image names such as 'Image_97'",
                         "name")


def parse_shapes(entries: Any, where: str) -> list[Shape]:
    """Validate one key's list of shapes; ``where`` names the file and key in errors."""
    if not isinstance(entries, list):
        raise EntryError(f"{where}: expected a list of [label, shape, points], got {type(entries).__name__}", "form")
    shapes = []
    for n, entry in enumerate(entries):
        at = f"{where}[{n}]"
        if not isinstance(entry, list) or len(entry) != 3:
            raise EntryError(f"{at}: expected [label, shape, [[x1, y1], [x2, y2]]], got {entry!r:.200}", "form")
        label, kind, points = entry
        if not isinstance(label, str) or label not in LABELS:
            raise EntryError(f"{at}: unknown label {label!r:.100}; valid labels are {sorted(LABELS)}", "label")
        if kind not in SHAPES:
            raise EntryError(f"{at}: unknown shape {kind!r:.100}; valid shapes are {list(SHAPES)}", "shape")
        if not isinstance(points, list) or len(points) != 2:
            count = len(points) if isinstance(points, list) else "no"
            raise EntryError(f"{at}: a {kind} needs exactly 2 points, got {count}", "points")
        pts = []
        for p in points:
            if (not isinstance(p, list) or len(p) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)):
                raise EntryError(f"{at}: each point must be [x, y] integers, got {p!r:.100}", "points")
            pts.append((p[0], p[1]))
        shapes.append(Shape(label, kind, pts[0], pts[1]))
    return shapes


def check_inside(shapes: list[Shape], height: int, width: int, where: str) -> None:
    for n, s in enumerate(shapes):
        for x, y in (s.p1, s.p2):
            if not (0 <= x < width and 0 <= y < height):
                raise EntryError(f"{where}[{n}]: point ({x}, {y}) is outside the {width}x{height} image", "outside")


def draw_mask(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    """Rasterise shapes in order onto a zero canvas of the image's own size."""
    mask = np.zeros((height, width), np.uint8)
    for s in shapes:
        value = LABELS[s.label]
        if s.kind == "line":
            cv2.line(mask, s.p1, s.p2, value, thickness=LINE_THICKNESS)
        else:
            cv2.rectangle(mask, s.p1, s.p2, value, thickness=cv2.FILLED)
    return mask


def find_image(images_dir: Path, key: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{key}{suffix}", images_dir / f"{key}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise EntryError(f"{images_dir}: no image for key {key!r} (looked for {key}{{{','.join(IMAGE_SUFFIXES)}}})",
                     "image")


def read_image_entry(path: Path) -> np.ndarray:
    """An annotated frame's image as 8-bit grey; a missing or unreadable one is a bad entry."""
    try:
        return read_grey8(path)
    except DataError as exc:
        raise EntryError(str(exc), "image") from None


def iter_seed_dataset(annotations: str | Path, images_dir: str | Path,
                      problems: ProblemLog | None = None) -> Iterator[SeedItem]:
    """Yield one SeedItem per usable key.

    A bad entry goes to ``problems`` (which raises it under --strict, else logs, counts and skips
    it); without a problem log the first bad entry raises.
    """
    annotations, images_dir = Path(annotations), Path(images_dir)
    problems = problems if problems is not None else ProblemLog(strict=True)
    data = load_annotations(annotations)
    duplicates = set(getattr(data, "duplicates", ()))
    for key in sorted(data):
        where = f"{annotations}: key {key!r}"
        try:
            check_key(key, where)
            if key in duplicates:
                raise EntryError(f"{where}: appears more than once in the file; which entry is meant is unclear",
                                 "duplicate")
            shapes = parse_shapes(data[key], where)
            image_path = find_image(images_dir, key)
            image = read_image_entry(image_path)
            check_inside(shapes, image.shape[0], image.shape[1], where)
        except EntryError as exc:
            problems.report(exc)
            continue
        yield SeedItem(key, image_path, image, draw_mask(shapes, *image.shape))
