"""What every annotation reader shares: the options it reads, the frames it yields, and the
checks that stand between an annotation file and a file path or an OpenCV call."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from usseg.runtime.contract import CLASS_NAME

from ..io import DataError
from ..maskfolder import id_problem
from ..problems import EntryError, ProblemLog
from ..seedformat import read_image_entry

MAX_CLASSES = 255  # masks are 8-bit, background included
MAX_SHAPE_POINTS = 100_000  # one polygon or line; more is not a hand-drawn annotation
MAX_NAME_PARTS = 8  # sub-folders in an image name ("train/patient1/frame.png")


@dataclass(frozen=True)
class SourceOptions:
    """Where the annotations and images are, and how to draw what has no area of its own."""

    annotations: Path | None = None
    images: Path | None = None
    masks_dir: Path | None = None
    classes: tuple[str, ...] | None = None  # --classes: the class order, background first
    line_width: int = 10                    # lines and polylines, in pixels (the seed's 10)


@dataclass(frozen=True)
class ImportedFrame:
    key: str                  # the id: images/<key>.png, masks/<key>.png
    image: np.ndarray         # 8-bit grey
    mask: np.ndarray          # uint8 class index per pixel, the image's size
    split: str | None = None  # a split the source fixes (nnU-Net's labelled imagesTs: test)


@dataclass
class Imported:
    classes: tuple[str, ...]          # background first
    frames: Iterable[ImportedFrame]   # read lazily: a frame at a time


def reported(items: Iterable[Any], frame: Callable[..., ImportedFrame], problems: ProblemLog) -> Iterator[ImportedFrame]:
    """``frame(*item)`` for each item (a tuple of arguments), lazily; an entry that fails is reported
    by file and key and the next one goes on, as every format's rules ask."""
    for item in items:
        try:
            yield frame(*item)
        except EntryError as exc:
            problems.report(exc)


def check_classes(classes: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Class names as a mask folder and a model contract accept them: 2 to 255, background first,
    unique, each a plain name."""
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise DataError(f"{where}: {len(classes) - 1} classes besides the background; 1 to {MAX_CLASSES - 1} fit "
                        f"in 8-bit masks")
    for name in classes:
        problem = CLASS_NAME.problem(name) if isinstance(name, str) else "not a string"
        if problem:
            raise DataError(f"{where}: class name {name!r:.80}: {problem}")
    if len(set(classes)) != len(classes):
        raise DataError(f"{where}: class names given twice in {list(classes)[:20]}")
    return tuple(classes)


def user_classes(options: SourceOptions, declared: tuple[str, ...], where: str) -> tuple[str, ...]:
    """``--classes`` when given (a label outside it is unknown), else the labels the tool declares."""
    names = options.classes if options.classes is not None else declared
    return check_classes(("background", *[n for n in names if n != "background"]), where)


def label_index(label: Any, classes: tuple[str, ...], where: str) -> int:
    if isinstance(label, str) and label in classes[1:]:
        return classes.index(label)
    raise EntryError(f"{where}: unknown label {label!r:.100}; valid labels are {list(classes[1:])}", "label")


def image_name(name: Any, where: str) -> tuple[str, PurePosixPath]:
    """An image name from an annotation file (COCO ``file_name``, CVAT ``name``): a relative path of
    plain names (sub-folders allowed), as (id, path under the image folder). Windows separators
    are read as separators; anything that could leave the image folder is a bad entry."""
    if not isinstance(name, str) or not name:
        raise EntryError(f"{where}: image name {name!r:.100} is not a file name", "name")
    parts = PureWindowsPath(name).parts if "\\" in name else PurePosixPath(name).parts
    if not parts or len(parts) > MAX_NAME_PARTS or PurePosixPath(name).is_absolute():
        raise EntryError(f"{where}: image name {name!r:.100} is not a relative path of at most "
                         f"{MAX_NAME_PARTS} names", "name")
    for part in parts:
        problem = id_problem(part)
        if problem:
            raise EntryError(f"{where}: image name {name!r:.100}: {part!r:.60} is not a plain file name ({problem})",
                             "name")
    key = PurePosixPath(parts[-1]).stem
    problem = id_problem(key)
    if problem:
        raise EntryError(f"{where}: image name {name!r:.100} gives the id {key!r:.60}, not a plain name ({problem})",
                         "name")
    return key, PurePosixPath(*parts)


def frame_key(path: Path, where: str) -> str:
    """The id of a frame named by a file of the source (a LabelMe JSON, an nnU-Net case)."""
    problem = id_problem(path.stem)
    if problem:
        raise EntryError(f"{where}: {path.stem!r:.100} cannot be an id: not a plain file name ({problem})", "name")
    return path.stem


def points_array(values: Any, where: str, height: int, width: int, min_points: int = 1) -> np.ndarray:
    """[[x, y], ...] (or a flat [x1, y1, x2, y2, ...]) as float64 [N, 2], every value a finite
    number inside the image's extent [0, W] x [0, H] (pixel edges: a box over the whole image
    ends at W and H). Nothing reaches OpenCV or pycocotools unchecked."""
    try:
        pts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise EntryError(f"{where}: points are not numbers ({str(values)[:80]})", "points") from None
    if pts.ndim == 1 and pts.size % 2 == 0:
        pts = pts.reshape(-1, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise EntryError(f"{where}: expected a list of [x, y] points, got shape {pts.shape}", "points")
    if not min_points <= len(pts) <= MAX_SHAPE_POINTS:
        raise EntryError(f"{where}: {len(pts)} points; this shape needs {min_points} to {MAX_SHAPE_POINTS}", "points")
    if not np.isfinite(pts).all():
        raise EntryError(f"{where}: a point is not a finite number", "points")
    outside = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
    if outside.any():
        x, y = pts[np.argmax(outside)]
        raise EntryError(f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} image", "outside")
    return pts


def number(value: Any, where: str, field: str) -> float:
    """A finite number from an annotation field (XML attributes arrive as text)."""
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise EntryError(f"{where}: {field} {value!r:.60} is not a number", "points") from None
    if not math.isfinite(out):
        raise EntryError(f"{where}: {field} {value!r:.60} is not a finite number", "points")
    return out


def whole(value: Any, where: str, field: str, low: int, high: int) -> int:
    """An integer field within [low, high] (sizes, offsets, ids)."""
    if isinstance(value, bool):
        raise EntryError(f"{where}: {field} {value!r} is not an integer", "form")
    try:
        out = int(value) if isinstance(value, int) else int(str(value).strip())
    except (TypeError, ValueError):
        raise EntryError(f"{where}: {field} {value!r:.60} is not an integer", "form") from None
    if not low <= out <= high:
        raise EntryError(f"{where}: {field} {out} is outside [{low}, {high}]", "form")
    return out


def load_json(path: Path, entry: bool = False) -> Any:
    """A JSON file of the source; an empty or malformed one raises DataError naming it (an
    EntryError when ``entry``: one bad frame of a source made of many files)."""
    error = EntryError if entry else DataError
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise error(f"{path}: empty file")
    try:
        return json.loads(text)
    except ValueError as exc:  # bad JSON, bad text encoding, an integer of thousands of digits
        raise error(f"{path}: malformed JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise error(f"{path}: malformed JSON (nested too deeply)") from None


def read_frame_image(path: Path, where: str, size: tuple[int | None, int | None] = (None, None)) -> np.ndarray:
    """A frame's image as 8-bit grey (the runtime's rule); missing, unreadable, or of another size
    than the annotation file declares (``size``: height, width): a bad entry."""
    image = read_image_entry(path)
    height, width = size
    if (height is not None and height != image.shape[0]) or (width is not None and width != image.shape[1]):
        raise EntryError(f"{where}: declares {width}x{height} but {path} is {image.shape[1]}x{image.shape[0]}",
                         "size")
    return image
