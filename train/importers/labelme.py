"""``--from labelme``: a folder of LabelMe JSON files, one per frame (the file's stem is the id).

Shapes are drawn in file order, later over earlier: ``polygon``, ``rectangle`` (two corners),
``circle`` (centre and a point on the circle), ``line`` and ``linestrip`` (``--line-width`` px
wide) and ``mask`` (a base64 PNG over the box of its two points; it keeps holes). ``point`` and
``points`` draw no area: counted and left out. The image is the file that ``imagePath`` names
(its file name only, looked up in ``--images``, else beside the JSON); when it is not there, the
image stored in the JSON (``imageData``). Classes: the labels found, in name order, or ``--classes``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from usseg.runtime.imageio import ImageError, decode_image
from usseg.runtime.preprocess import FrameError, to_grey8

from ..io import DataError, max_pixels
from ..problems import EntryError, ProblemLog
from .base import (
    Imported,
    ImportedFrame,
    SourceOptions,
    frame_key,
    label_index,
    load_json,
    points_array,
    read_frame_image,
    reported,
    user_classes,
    whole,
)
from .draw import ellipse_points, line_region, paint, polygon_region

MAX_SIDE = 1 << 16
NO_AREA = ("point", "points")
AREAS = ("polygon", "rectangle", "circle", "line", "linestrip", "mask")


def _decode_png(text: Any, where: str, what: str) -> np.ndarray:
    if not isinstance(text, str):
        raise EntryError(f"{where}: {what} is not base64 text", "form")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{where}: {what} is not valid base64", "form") from None
    try:
        return decode_image(data, f"{where}: {what}", max_pixels())  # size checked from the header first
    except ImageError as exc:
        raise EntryError(str(exc), "image") from None


def frame_image(doc: dict, json_path: Path, images_dir: Path | None, where: str) -> np.ndarray:
    size = tuple(whole(doc[k], where, k, 1, MAX_SIDE) if doc.get(k) is not None else None
                 for k in ("imageHeight", "imageWidth"))
    name = doc.get("imagePath")
    if isinstance(name, str) and name:
        file_name = (PureWindowsPath if "\\" in name else PurePosixPath)(name).name  # never a path from the file
        path = (images_dir or json_path.parent) / file_name
        if file_name and not file_name.startswith(".") and path.is_file():
            return read_frame_image(path, where, size)
    if doc.get("imageData") is None:
        raise EntryError(f"{where}: image {str(name)[:80]!r} not found in {images_dir or json_path.parent} and no "
                         f"imageData in the file", "image")
    try:
        image = to_grey8(_decode_png(doc["imageData"], where, "imageData"))
    except FrameError as exc:
        raise EntryError(f"{where}: imageData: {exc}", "image") from None
    if size != (None, None) and size != image.shape:
        raise EntryError(f"{where}: declares {size[1]}x{size[0]} but imageData is {image.shape[1]}x{image.shape[0]}",
                         "size")
    return image


def shape_region(shape: dict, kind: str, height: int, width: int, line_width: int, where: str) -> np.ndarray:
    points = shape.get("points")
    if kind == "polygon":
        return polygon_region(points_array(points, where, height, width, 3), height, width)
    if kind in ("line", "linestrip"):
        pts = points_array(points, where, height, width, 2)
        if kind == "line" and len(pts) != 2:
            raise EntryError(f"{where}: a line has 2 points, got {len(pts)}", "points")
        return line_region(pts, height, width, line_width)
    pts = points_array(points, where, height, width, 2)
    if len(pts) != 2:
        raise EntryError(f"{where}: a {kind} has 2 points, got {len(pts)}", "points")
    (x0, y0), (x1, y1) = pts
    if kind == "rectangle":
        box = [[min(x0, x1), min(y0, y1)], [max(x0, x1), min(y0, y1)], [max(x0, x1), max(y0, y1)],
               [min(x0, x1), max(y0, y1)]]
        return polygon_region(np.asarray(box), height, width)
    if kind == "circle":
        r = float(np.hypot(x1 - x0, y1 - y0))
        return polygon_region(ellipse_points(x0, y0, r, r, 0.0, height, width), height, width)
    # mask: a PNG over the pixels from the first point to the second, both included (LabelMe's rule)
    left, top, right, bottom = int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1))
    right, bottom = min(right, width - 1), min(bottom, height - 1)
    part = _decode_png(shape.get("mask"), where, "mask")
    if part.ndim != 2 or part.shape != (bottom - top + 1, right - left + 1):
        raise EntryError(f"{where}: mask is {part.shape[::-1]} but its box is {right - left + 1}x{bottom - top + 1}",
                         "mask")
    region = np.zeros((height, width), bool)
    region[top:bottom + 1, left:right + 1] = part > 0
    return region


def _labels(paths: list[Path]) -> tuple[str, ...]:
    """Every label of the folder, in name order (read once before the frames are drawn)."""
    found: set[str] = set()
    for path in paths:
        try:
            doc = load_json(path, entry=True)
        except EntryError:
            continue  # reported when the frame is read
        shapes = doc.get("shapes") if isinstance(doc, dict) else None
        for shape in shapes if isinstance(shapes, list) else []:
            if isinstance(shape, dict) and isinstance(shape.get("label"), str) \
                    and (shape.get("shape_type") or "polygon") not in NO_AREA:
                found.add(shape["label"])
    return tuple(sorted(found))


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    folder = options.annotations
    paths = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if not paths:
        raise DataError(f"{folder}: no LabelMe JSON files")
    classes = user_classes(options, _labels(paths) if options.classes is None else (), str(folder))

    def frame(path: Path) -> ImportedFrame:
        where = str(path)
        key = frame_key(path, where)
        doc = load_json(path, entry=True)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise EntryError(f"{where}: not a LabelMe file (no 'shapes' list)", "form")
        image = frame_image(doc, path, options.images, where)
        h, w = image.shape
        mask = np.zeros((h, w), np.uint8)
        for n, shape in enumerate(doc["shapes"]):
            label = shape.get("label") if isinstance(shape, dict) else None
            at = f"{where}: shapes[{n}] ({str(label)[:60]!r})"
            if not isinstance(shape, dict):
                raise EntryError(f"{at}: expected an object", "form")
            kind = shape.get("shape_type") or "polygon"
            if kind in NO_AREA:
                problems.note(f"{kind} shape", f"{at}: a {kind} draws no area")
                continue
            if kind not in AREAS:
                raise EntryError(f"{at}: unknown shape type {str(kind)[:40]!r}; valid types are {list(AREAS)} "
                                 f"(and {list(NO_AREA)}, which draw no area)", "shape")
            value = label_index(label, classes, at)
            paint(mask, shape_region(shape, kind, h, w, options.line_width, at), value)
        return ImportedFrame(key, image, mask)

    return Imported(classes, reported(((path,) for path in paths), frame, problems))
