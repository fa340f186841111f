"""Data set fingerprint: measured facts about a mask folder, kept apart from the decisions (plan.py).

    fp = measure(open_mask_folder(DIR))       # train and val frames; test: images for the leakage check only
    write_fingerprint(DIR / "fingerprint.json", fp)

What is measured: frame sizes and aspect ratios, the images' stored bit depth and channels,
grey-level statistics (over all pixels, per frame and per class), the pixel share of each class,
each class's objects (8-connected components: count per frame, area, longest bounding-box side,
thickness = twice the largest inscribed radius), frames without any structure, and the pixel
spacing when the user gives it. Sizes are in pixels of the original frames.

One check looks at the test split: val and test frames that are near-duplicates of train frames
(``usseg.train.leakage``: their count and the closest pairs, under ``leakage``). For it the test
images are read as thumbnails; the test masks are never read and nothing of the test split
enters the plan.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from .io import DataError, read_grey8, read_image, write_json
from .leakage import near_duplicates, thumbnail
from .maskfolder import MaskFolder

FINGERPRINT_VERSION = 1
MEASURED_SPLITS = ("train", "val")  # the test split stays unseen until the final score
PERCENTILES = (5, 50, 95)
MAX_INTENSITY_SAMPLES = 2_000_000  # pixels kept for the grey-level percentiles


def _pcts(values: Any) -> dict[str, float | None]:
    """{"p5", "p50", "p95", "max"} of ``values``; None for an empty list."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {f"p{p}": None for p in PERCENTILES} | {"max": None}
    out = {f"p{p}": round(float(np.percentile(v, p)), 3) for p in PERCENTILES}
    out["max"] = round(float(v.max()), 3)
    return out


@dataclass(frozen=True)
class ClassStats:
    """One foreground class over the measured frames."""

    index: int
    name: str
    pixel_share: float                 # of all measured pixels
    frames_present: int
    objects_per_frame: dict[str, Any]  # over the frames where the class is present
    area_px: dict[str, Any]            # per object
    extent_px: dict[str, Any]          # per object: longest side of its bounding box
    thickness_px: dict[str, Any]       # per object: twice the largest inscribed radius
    mean_grey: float | None            # grey mean over the class's pixels (8-bit)


@dataclass(frozen=True)
class Fingerprint:
    """Facts about a mask folder's train and val frames (JSON round trip: to_dict / from_dict)."""

    data: str
    data_id: str                       # MaskFolder.fingerprint(): ties a plan to its data
    classes: tuple[str, ...]
    frames: dict[str, int]             # per split, test included (counted; its masks never read)
    measured_frames: int
    sizes: list[dict[str, int]]        # [{"height", "width", "count"}], most frequent first
    median_height: float
    median_width: float
    median_aspect: float               # width / height
    stored: list[dict[str, Any]]       # [{"bit_depth", "channels", "count"}] as the files store them
    intensity: dict[str, Any]          # grey8 over all pixels: mean, std, p0.5, p50, p99.5
    frame_mean: dict[str, Any]         # per-frame grey mean percentiles
    frame_std: dict[str, Any]          # per-frame grey standard deviation percentiles
    empty_frames: int                  # frames without any foreground class
    class_stats: tuple[ClassStats, ...]
    spacing_mm: float | None = None
    spacing_source: str = "unknown"
    leakage: dict[str, Any] | None = None  # near-duplicates of train frames in val / test (leakage.Leakage)
    version: int = FINGERPRINT_VERSION
    measured_splits: tuple[str, ...] = field(default=MEASURED_SPLITS)

    @property
    def train_frames(self) -> int:
        return self.frames.get("train", 0)

    @property
    def empty_share(self) -> float:
        return self.empty_frames / max(self.measured_frames, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"], data["measured_splits"] = list(self.classes), list(self.measured_splits)
        data["class_stats"] = [asdict(c) for c in self.class_stats]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        try:
            stats = tuple(ClassStats(**c) for c in data["class_stats"])
            return cls(**{**data, "classes": tuple(data["classes"]), "class_stats": stats,
                          "measured_splits": tuple(data.get("measured_splits", MEASURED_SPLITS))})
        except (KeyError, TypeError) as exc:
            raise DataError(f"fingerprint: not a usseg fingerprint ({exc})") from None


def png_depth(path: Path) -> tuple[int, int] | None:
    """(bit depth, channels) from a PNG header, without decoding the pixels; None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    depth, colour = struct.unpack(">BB", head[24:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)  # 3: palette, one index per pixel
    return depth, channels


def _stored(path: Path) -> tuple[int, int]:
    found = png_depth(path)
    if found is not None:
        return found
    image = read_image(path)
    return image.dtype.itemsize * 8, 1 if image.ndim == 2 else image.shape[2]


def object_stats(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 8-connected component of a binary mask: (areas, longest bbox sides, thicknesses)."""
    binary = np.ascontiguousarray(mask, np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        empty = np.zeros(0)
        return empty, empty, empty
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    extents = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]).astype(np.float64)
    # the distance of an object pixel to the nearest background pixel, at most, is the inscribed radius
    distance = cv2.distanceTransform(np.pad(binary, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    radii = np.asarray(ndimage.maximum(distance, labels, index=np.arange(1, count)), np.float64)
    return areas, extents, 2.0 * radii


def measure(folder: MaskFolder, spacing_mm: float | None = None, splits: tuple[str, ...] = MEASURED_SPLITS,
            seed: int = 0) -> Fingerprint:
    """Measure ``splits`` of ``folder`` (train and val by default)."""
    if spacing_mm is not None and not spacing_mm > 0:
        raise ValueError(f"spacing {spacing_mm}: must be > 0 (mm per pixel)")
    ids = [i for s in splits for i in folder.ids(s)]
    if not ids:
        raise DataError(f"{folder.root / 'split.csv'}: no frames in the splits {list(splits)} to measure")
    n = len(folder.classes)
    sizes, stored = Counter(), Counter()
    frame_means, frame_stds, samples = [], [], []
    class_pixels, class_grey = np.zeros(n, np.float64), np.zeros(n, np.float64)
    present = np.zeros(n, np.int64)
    per_class: dict[int, dict[str, list[float]]] = {c: {"objects": [], "area": [], "extent": [], "thick": []}
                                                    for c in range(1, n)}
    empty = 0
    rng = np.random.default_rng(seed)
    per_frame_samples = max(1, MAX_INTENSITY_SAMPLES // len(ids))
    thumbs = {}
    for item_id in ids:
        image, mask = folder.load(item_id)
        thumbs[item_id] = thumbnail(image)
        sizes[image.shape] += 1
        stored[_stored(folder.image_path(item_id))] += 1
        grey = image.astype(np.float64)
        frame_means.append(grey.mean())
        frame_stds.append(grey.std())
        flat = image.ravel()
        samples.append(flat if flat.size <= per_frame_samples else rng.choice(flat, per_frame_samples, replace=False))
        counts = np.bincount(mask.ravel(), minlength=n)[:n]
        class_pixels += counts
        class_grey += np.bincount(mask.ravel(), weights=grey.ravel(), minlength=n)[:n]
        empty += int(counts[1:].sum() == 0)
        for c in range(1, n):
            if counts[c] == 0:
                continue
            present[c] += 1
            areas, extents, thick = object_stats(mask == c)
            stats = per_class[c]
            stats["objects"].append(len(areas))
            stats["area"].extend(areas)
            stats["extent"].extend(extents)
            stats["thick"].extend(thick)
    for item_id in folder.ids("test") if "train" in splits else ():
        thumbs[item_id] = thumbnail(read_grey8(folder.image_path(item_id)))  # the image only, for the check
    leakage = near_duplicates(thumbs, folder.splits) if "train" in splits else None
    pixels = np.concatenate(samples).astype(np.float64)
    heights = np.repeat([s[0] for s in sizes], list(sizes.values()))
    widths = np.repeat([s[1] for s in sizes], list(sizes.values()))
    aspects = widths / heights
    total = class_pixels.sum()
    class_stats = tuple(
        ClassStats(index=c, name=folder.classes[c], pixel_share=round(float(class_pixels[c] / total), 6),
                   frames_present=int(present[c]), objects_per_frame=_pcts(per_class[c]["objects"]),
                   area_px=_pcts(per_class[c]["area"]), extent_px=_pcts(per_class[c]["extent"]),
                   thickness_px=_pcts(per_class[c]["thick"]),
                   mean_grey=round(float(class_grey[c] / class_pixels[c]), 3) if class_pixels[c] else None)
        for c in range(1, n))
    return Fingerprint(
        data=str(folder.root), data_id=folder.fingerprint(), classes=tuple(folder.classes),
        frames={s: len(folder.ids(s)) for s in ("train", "val", "test")}, measured_frames=len(ids),
        sizes=[{"height": h, "width": w, "count": k} for (h, w), k in sizes.most_common()],
        median_height=float(np.median(heights)), median_width=float(np.median(widths)),
        median_aspect=round(float(np.median(aspects)), 4),
        stored=[{"bit_depth": d, "channels": ch, "count": k} for (d, ch), k in stored.most_common()],
        intensity={"mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3),
                   "p0_5": float(np.percentile(pixels, 0.5)), "p50": float(np.percentile(pixels, 50)),
                   "p99_5": float(np.percentile(pixels, 99.5))},
        frame_mean=_pcts(frame_means), frame_std=_pcts(frame_stds), empty_frames=empty,
        class_stats=class_stats, spacing_mm=spacing_mm, leakage=leakage.to_dict() if leakage else None,
        spacing_source="given" if spacing_mm is not None else "unknown", measured_splits=tuple(splits))


def write_fingerprint(path: str | Path, fp: Fingerprint) -> None:
    write_json(path, fp.to_dict())


def read_fingerprint(path: str | Path) -> Fingerprint:
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: fingerprint not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    try:
        return Fingerprint.from_dict(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
