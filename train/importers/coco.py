"""``--from coco``: a COCO instance or semantic segmentation JSON (what CVAT, Label Studio,
Roboflow and detectron2 write) + the image folder it names.

Each image's annotations are drawn in file order, later over earlier: polygons (one or more parts
per object), uncompressed RLE (``counts`` a list) and compressed RLE (``counts`` a string),
decoded by pycocotools; RLE keeps holes. Classes are the category names in id order, or
``--classes``. An annotation with no segmentation (a box only) draws nothing and is counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from ..io import DataError
from ..problems import EntryError, ProblemLog
from .base import (
    Imported,
    ImportedFrame,
    SourceOptions,
    image_name,
    label_index,
    load_json,
    points_array,
    read_frame_image,
    reported,
    user_classes,
    whole,
)
from .draw import checked_counts, coco_string_counts, paint, polygon_region, rle_region

MAX_SIDE = 1 << 16


def _list(data: dict, key: str, where: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise DataError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _categories(data: dict, where: str) -> dict[Any, str]:
    """category id -> name, in id order."""
    found: dict[Any, str] = {}
    for n, cat in enumerate(_list(data, "categories", where)):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise DataError(f"{where}: categories[{n}]: expected {{\"id\": int, \"name\": str}}, got {str(cat)[:80]}")
        if cat["id"] in found:
            raise DataError(f"{where}: categories[{n}]: category id {cat['id']} given twice")
        found[cat["id"]] = cat["name"]
    if not found:
        raise DataError(f"{where}: no categories; a COCO file lists its classes under 'categories'")
    return dict(sorted(found.items()))


def segmentation_region(seg: Any, height: int, width: int, where: str) -> np.ndarray | None:
    """Boolean [H, W] of one annotation's segmentation; None when it has none."""
    if isinstance(seg, list):
        if not seg:
            return None
        region = np.zeros((height, width), bool)
        for n, part in enumerate(seg):
            region |= polygon_region(points_array(part, f"{where}.segmentation[{n}]", height, width, min_points=3),
                                     height, width)
        return region
    if isinstance(seg, dict):
        size = seg.get("size")
        if size != [height, width]:
            raise EntryError(f"{where}: RLE size {str(size)[:40]} is not the image's [{height}, {width}]", "mask")
        counts = seg.get("counts")
        if isinstance(counts, str):
            counts = coco_string_counts(counts, where)
        return rle_region(checked_counts(counts, height * width, where), height, width)
    raise EntryError(f"{where}: segmentation must be polygons (a list) or RLE (an object), got {type(seg).__name__}",
                     "form")


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    path = options.annotations
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with images, annotations and categories")
    categories = _categories(data, str(path))
    classes = user_classes(options, tuple(categories.values()), str(path))
    images = _list(data, "images", str(path))
    by_image: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
    for n, ann in enumerate(_list(data, "annotations", str(path))):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if isinstance(image_id, (int, str)):
            by_image[image_id].append((n, ann))
        else:
            problems.report(EntryError(f"{path}: annotations[{n}]: no image_id", "form"))
    ids = Counter(img["id"] for img in images if isinstance(img, dict) and isinstance(img.get("id"), (int, str)))
    twice = {i for i, count in ids.items() if count > 1}
    for image_id, anns in by_image.items():
        if image_id not in ids:
            for n, _ in anns:
                problems.report(EntryError(f"{path}: annotations[{n}]: image_id {image_id!r:.40} is not in 'images'",
                                           "form"))

    def frame(n: int, img: Any) -> ImportedFrame:
        if not isinstance(img, dict):
            raise EntryError(f"{path}: images[{n}]: expected an object, got {type(img).__name__}", "form")
        where = f"{path}: image {str(img.get('file_name'))[:100]!r} (images[{n}])"
        if not isinstance(img.get("id"), (int, str)):
            raise EntryError(f"{where}: no image id (an integer)", "form")
        if img["id"] in twice:
            raise EntryError(f"{where}: image id {img.get('id')!r:.40} is given to more than one image", "duplicate")
        key, rel = image_name(img.get("file_name"), where)
        size = tuple(whole(img[k], where, k, 1, MAX_SIDE) if k in img else None for k in ("height", "width"))
        image = read_frame_image(options.images / rel, where, size)
        h, w = image.shape
        mask = np.zeros((h, w), np.uint8)
        for a, ann in by_image.get(img.get("id"), []):
            at = f"{where}: annotations[{a}]"
            cat = ann.get("category_id")
            if not isinstance(cat, int) or cat not in categories:
                raise EntryError(f"{at}: category_id {cat!r:.40} is not one of the file's categories "
                                 f"{list(categories)[:20]}", "label")
            value = label_index(categories[cat], classes, at)
            region = segmentation_region(ann.get("segmentation"), h, w, at)
            if region is None:
                problems.note("annotation without a segmentation", f"{at}: no segmentation (a box only)")
                continue
            paint(mask, region, value)
        return ImportedFrame(key, image, mask)

    return Imported(classes, reported(enumerate(images), frame, problems))
