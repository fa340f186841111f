"""``--from cvat``: CVAT's two image exports.

- CVAT for images 1.1 (``annotations.xml``): per ``<image>``, polygons, polylines (drawn
  ``--line-width`` px wide: CVAT gives them no width), boxes (turned by ``rotation``), ellipses and
  masks (``rle``: row-major run lengths, background first, over the box ``left, top, width,
  height``) are drawn in ``z_order``, then file order, later over earlier. Points, skeletons,
  cuboids and tags draw no area: counted and left out. Images: ``--images``, else ``images/``
  beside the XML (the export's own layout). The XML is parsed with defusedxml (no entities, no
  external references).
- Segmentation mask 1.1 (a folder with ``labelmap.txt`` and ``SegmentationClass/*.png``): each
  pixel's colour is looked up in the label map. Images: ``--images``, else ``JPEGImages/``.

Classes: the task's labels in the order CVAT lists them (or the label map's), or ``--classes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from ..io import DataError, read_image
from ..problems import EntryError, ProblemLog
from ..seedformat import find_image
from .base import (
    MAX_SHAPE_POINTS,
    Imported,
    ImportedFrame,
    SourceOptions,
    frame_key,
    image_name,
    label_index,
    number,
    points_array,
    read_frame_image,
    reported,
    user_classes,
    whole,
)
from .draw import (
    checked_counts,
    ellipse_points,
    line_region,
    paint,
    polygon_region,
    rotated_box_points,
    row_runs_region,
)

MAX_SIDE = 1 << 16
NO_AREA = ("points", "skeleton", "cuboid", "tag")


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    if options.annotations.is_dir():
        return read_mask_export(options, problems)
    return read_xml(options, problems)


# -- CVAT for images 1.1 ---------------------------------------------------------------------------------
def _parse(path: Path):
    try:
        root = ElementTree.parse(str(path), forbid_dtd=True).getroot()
    except DefusedXmlException as exc:
        raise DataError(f"{path}: refused XML ({type(exc).__name__}: DTDs and entities are not read)") from None
    except ElementTree.ParseError as exc:
        raise DataError(f"{path}: " + ("empty file" if path.stat().st_size == 0 else f"malformed XML ({exc})")) from None
    if root.tag != "annotations":
        raise DataError(f"{path}: not a CVAT XML export (the root element is <{root.tag[:40]}>, not <annotations>)")
    if root.find("track") is not None:
        raise DataError(f"{path}: a CVAT for video export (<track> elements); export the task as "
                        f"'CVAT for images 1.1'")
    return root


def _points(text: str | None, where: str, height: int, width: int, min_points: int) -> np.ndarray:
    """CVAT's "x0,y0;x1,y1;..." as checked float points."""
    if not text or text.count(";") >= MAX_SHAPE_POINTS:
        raise EntryError(f"{where}: points {str(text)[:40]!r} is empty or too long", "points")
    pairs = [p.split(",") for p in text.split(";")]
    if any(len(p) != 2 for p in pairs):
        raise EntryError(f"{where}: points {text[:60]!r} are not 'x,y;x,y;...'", "points")
    values = [[number(x, where, "x"), number(y, where, "y")] for x, y in pairs]
    return points_array(values, where, height, width, min_points)


def shape_region(el, height: int, width: int, line_width: int, where: str) -> np.ndarray:
    """Boolean [H, W] of one CVAT shape element."""
    get = el.get
    if el.tag == "polygon":
        return polygon_region(_points(get("points"), where, height, width, 3), height, width)
    if el.tag == "polyline":
        return line_region(_points(get("points"), where, height, width, 2), height, width, line_width)
    if el.tag == "box":
        corners = points_array([[number(get("xtl"), where, "xtl"), number(get("ytl"), where, "ytl")],
                                [number(get("xbr"), where, "xbr"), number(get("ybr"), where, "ybr")]],
                               where, height, width, 2)
        (x0, y0), (x1, y1) = corners
        angle = number(get("rotation", "0"), where, "rotation")
        return polygon_region(rotated_box_points(x0, y0, x1, y1, angle, height, width), height, width)
    if el.tag == "ellipse":
        (cx, cy), = points_array([[number(get("cx"), where, "cx"), number(get("cy"), where, "cy")]],
                                 where, height, width)
        rx, ry = (number(get(k), where, k) for k in ("rx", "ry"))
        if not (0 < rx <= 2 * width and 0 < ry <= 2 * height):
            raise EntryError(f"{where}: radii {rx:g}, {ry:g} do not fit the {width}x{height} image", "points")
        angle = number(get("rotation", "0"), where, "rotation")
        return polygon_region(ellipse_points(cx, cy, rx, ry, angle, height, width), height, width)
    if el.tag == "mask":
        left, top = whole(get("left"), where, "left", 0, width - 1), whole(get("top"), where, "top", 0, height - 1)
        w = whole(get("width"), where, "width", 1, width - left)
        h = whole(get("height"), where, "height", 1, height - top)
        text = get("rle") or ""
        if text.count(",") > 2 * w * h:
            raise EntryError(f"{where}: rle has more runs than the mask has pixels", "mask")
        try:
            counts = [int(c) for c in text.split(",")]
        except ValueError:
            raise EntryError(f"{where}: rle {text[:40]!r} is not a list of integers", "mask") from None
        region = np.zeros((height, width), bool)
        region[top:top + h, left:left + w] = row_runs_region(checked_counts(counts, w * h, where), h, w)
        return region
    raise EntryError(f"{where}: unknown shape <{el.tag[:40]}>; valid shapes are polygon, polyline, box, ellipse, "
                     f"mask (and {', '.join(NO_AREA)}, which draw no area)", "shape")


def read_xml(options: SourceOptions, problems: ProblemLog) -> Imported:
    path = options.annotations
    root = _parse(path)
    declared = tuple(dict.fromkeys(
        (label.findtext("name") or "").strip() for label in root.iter("label")
        if not (label.findtext("parent") or "").strip()))
    classes = user_classes(options, tuple(n for n in declared if n), str(path))
    images_dir = options.images if options.images is not None else path.parent / "images"

    def frame(n: int, el) -> ImportedFrame:
        where = f"{path}: image {str(el.get('name'))[:100]!r} (id {str(el.get('id'))[:20]})"
        key, rel = image_name(el.get("name"), where)
        size = tuple(whole(el.get(k), where, k, 1, MAX_SIDE) if el.get(k) is not None else None
                     for k in ("height", "width"))
        image = read_frame_image(images_dir / rel, where, size)
        h, w = image.shape
        mask = np.zeros((h, w), np.uint8)
        shapes = [(s, i) for i, s in enumerate(el)]
        order = sorted(shapes, key=lambda si: (whole(si[0].get("z_order", "0"), where, "z_order", -(1 << 30), 1 << 30),
                                               si[1]))
        for shape, i in order:
            at = f"{where}: <{shape.tag[:40]}> #{i} ({str(shape.get('label'))[:60]!r})"
            if shape.tag in NO_AREA:
                problems.note(f"{shape.tag} shape", f"{at}: draws no area")
                continue
            value = label_index(shape.get("label"), classes, at)
            paint(mask, shape_region(shape, h, w, options.line_width, at), value)
        return ImportedFrame(key, image, mask)

    return Imported(classes, reported(enumerate(root.findall("image")), frame, problems))


# -- Segmentation mask 1.1 -------------------------------------------------------------------------------
def read_labelmap(path: Path) -> dict[str, tuple[int, int, int]]:
    """labelmap.txt: ``name:r,g,b:parts:actions`` per line, ``#`` comments."""
    if not path.is_file():
        raise DataError(f"{path.parent}: no labelmap.txt; a CVAT 'Segmentation mask 1.1' export has one")
    colours: dict[str, tuple[int, int, int]] = {}
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        try:
            rgb = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            rgb = ()
        if len(fields) < 2 or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}:{line_no}: expected 'name:r,g,b:parts:actions', got {line[:80]!r}")
        name = fields[0].strip()
        if name in colours or rgb in colours.values():
            raise DataError(f"{path}:{line_no}: label {name!r} or its colour {rgb} is given twice")
        colours[name] = rgb
    return colours


def read_mask_export(options: SourceOptions, problems: ProblemLog) -> Imported:
    root = options.annotations
    colours = read_labelmap(root / "labelmap.txt")
    classes = user_classes(options, tuple(n for n in colours if n != "background"), str(root / "labelmap.txt"))
    images_dir = options.images if options.images is not None else root / "JPEGImages"
    paths = sorted((root / "SegmentationClass").glob("*.png"))
    if not paths:
        raise DataError(f"{root / 'SegmentationClass'}: no mask PNGs found")

    def frame(path: Path) -> ImportedFrame:
        where = str(path)
        key = frame_key(path, where)
        image = read_frame_image(find_image(images_dir, key), where)
        try:
            colour = read_image(path)
        except DataError as exc:
            raise EntryError(str(exc), "mask") from None
        if colour.ndim != 3 or colour.shape[2] not in (3, 4) or colour.dtype != np.uint8:
            raise EntryError(f"{where}: expected an 8-bit colour mask, got shape {colour.shape} {colour.dtype}", "mask")
        if colour.shape[:2] != image.shape:
            raise EntryError(f"{where}: mask size {colour.shape[1]}x{colour.shape[0]} differs from the image's "
                             f"{image.shape[1]}x{image.shape[0]}", "size")
        rgb = colour[:, :, 2::-1]
        mask = np.zeros(image.shape, np.uint8)
        known = np.zeros(image.shape, bool)
        for name, value in colours.items():
            region = (rgb == value).all(axis=2)
            known |= region
            if name != "background" and region.any():
                paint(mask, region, label_index(name, classes, f"{where}: colour {value}"))
        if not known.all():
            y, x = np.argwhere(~known)[0]
            raise EntryError(f"{where}: pixel ({x}, {y}) has the colour {tuple(int(v) for v in rgb[y, x])}, "
                             f"which labelmap.txt does not list", "label")
        return ImportedFrame(key, image, mask)

    return Imported(classes, reported(((path,) for path in paths), frame, problems))
