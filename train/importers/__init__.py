"""Annotation sources that ``usseg prepare --from NAME`` turns into a mask folder.

One table, :data:`FORMATS`, drives the ``--from`` choices, the option checks, ``--help``, the
README's list and the tests. Each format's module has ``read(options, problems) -> Imported``:
it yields frames (8-bit grey image, uint8 class-index mask) one at a time and reports each bad
entry, by file and key, to the problem log (``usseg.train.problems``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..problems import ProblemLog
from .base import Imported, ImportedFrame, SourceOptions

__all__ = ["FORMATS", "Format", "Imported", "ImportedFrame", "SourceOptions", "get_format", "read_source"]


@dataclass(frozen=True)
class Format:
    name: str
    module: str              # usseg.train.importers.<module>: read(options, problems) -> Imported
    source: str              # the option naming the export: "--annotations" or "--masks-dir"
    source_kind: str         # what that option must name: "file", "folder" or "file or folder"
    images: str              # --images: "required", "optional" or "unused"
    reads: str               # one line for --help and the README


FORMATS: tuple[Format, ...] = (
    Format("seed", "seed", "--annotations", "file", "required",
           "the seed's annotations.json (label, line | rect, two points) + an image folder"),
    Format("coco", "coco", "--annotations", "file", "required",
           "COCO instance or semantic JSON: polygons and RLE masks, category names as classes"),
    Format("cvat", "cvat", "--annotations", "file or folder", "optional",
           "CVAT for images 1.1 XML (polygons, polylines, boxes, ellipses, masks) or CVAT's "
           "Segmentation mask 1.1 export folder (labelmap.txt, SegmentationClass/)"),
    Format("labelme", "labelme", "--annotations", "folder", "optional",
           "a folder of LabelMe JSON files (polygons, rectangles, circles, lines, line strips, masks)"),
    Format("nnunet", "nnunet", "--annotations", "folder", "unused",
           "an nnU-Net v2 raw data set folder (dataset.json, imagesTr/labelsTr, imagesTs; PNG or NIfTI)"),
    Format("masks", "masks", "--masks-dir", "folder", "unused",
           "a mask folder (images/, masks/, classes.json), copied or re-split in place"),
)


def get_format(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown format {name!r}; valid formats are {[f.name for f in FORMATS]}")


def read_source(fmt: Format, options: SourceOptions, problems: ProblemLog) -> Imported:
    module = importlib.import_module(f"{__name__}.{fmt.module}")
    return module.read(options, problems)
