"""The mask-folder data set layout, the one format that training reads.

    images/<id>.png   8-bit grey
    masks/<id>.png    8-bit, class index per pixel
    split.csv         id,split   (train / val / test)
    classes.json      {"<index>": "<name>"}, background = 0
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np

from .io import DataError, read_grey8, read_image, write_json, write_png

SPLITS = ("train", "val", "test")
MAX_ID_BYTES = 200  # <id>.png and its temporary name stay within the usual 255-byte name limit
# Names Windows keeps for devices, with any extension (CON.png is the console there).
RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                            *(f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3")})


def id_problem(item_id: object) -> str | None:
    """Why ``item_id`` cannot be an id (None when it can). Ids become file names (images/<id>.png),
    so an id must be a plain name that stays inside its folder on every system and reads as it
    is: no path separators, no "..", no drive, no control characters, not hidden (temporaries
    start with "."), no leading or trailing space, no device name reserved on Windows, and no
    invisible formatting characters (bidirectional overrides such as U+202E show a name reversed;
    zero-width ones make two names look alike).
    """
    if not isinstance(item_id, str) or not item_id:
        return "it is empty" if item_id == "" else f"it is a {type(item_id).__name__}, not a string"
    if "/" in item_id or "\\" in item_id:
        return "it contains a path separator"
    if ".." in item_id:
        return "it contains '..'"
    if item_id.startswith("."):
        return "it starts with '.'"
    if PureWindowsPath(item_id).drive:
        return "it starts with a drive name"
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in item_id):
        return "it contains a control character"
    invisible = next((ch for ch in item_id if unicodedata.category(ch) == "Cf"), None)
    if invisible is not None:
        return f"it contains the invisible formatting character U+{ord(invisible):04X}"
    if item_id != item_id.strip():
        return "it starts or ends with a space"
    if item_id.split(".")[0].rstrip(" ").upper() in RESERVED_NAMES:
        return f"{item_id.split('.')[0]!r} is a device name reserved on Windows"
    try:
        size = len(item_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if size > MAX_ID_BYTES:
        return f"it is {size} bytes long (at most {MAX_ID_BYTES})"
    return None


@dataclass(frozen=True)
class MaskFolder:
    root: Path
    classes: tuple[str, ...]
    splits: dict[str, str]  # id -> split

    def ids(self, split: str | None = None) -> list[str]:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits are {list(SPLITS)}")
        return sorted(i for i, s in self.splits.items() if split is None or s == split)

    def image_path(self, item_id: str) -> Path:
        return self.root / "images" / f"{item_id}.png"

    def mask_path(self, item_id: str) -> Path:
        return self.root / "masks" / f"{item_id}.png"

    def load(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(8-bit grey image, uint8 mask) of one id; sizes and class indices are checked."""
        image = read_grey8(self.image_path(item_id))
        mask = read_image(self.mask_path(item_id))
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise DataError(f"{self.mask_path(item_id)}: a mask must be 8-bit single-channel, got "
                            f"shape {mask.shape} {mask.dtype}")
        if mask.shape != image.shape:
            raise DataError(f"{self.mask_path(item_id)}: mask size {mask.shape} differs from image size {image.shape}")
        top = int(mask.max())
        if top >= len(self.classes):
            raise DataError(f"{self.mask_path(item_id)}: class index {top} but classes.json has {len(self.classes)} classes")
        return image, mask

    def fingerprint(self) -> str:
        """A short hash of split.csv, classes.json and every mask: enough to tell data sets apart."""
        h = hashlib.sha256()
        h.update((self.root / "split.csv").read_bytes())
        h.update((self.root / "classes.json").read_bytes())
        for item_id in self.ids():
            h.update(self.mask_path(item_id).read_bytes())
        return h.hexdigest()[:16]


def read_classes(path: Path) -> tuple[str, ...]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: classes.json not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{\"index\": \"name\"}}")
    try:
        indexed = {int(k): v for k, v in data.items()}
    except ValueError:
        raise DataError(f"{path}: keys must be class indices, got {sorted(data)}") from None
    if sorted(indexed) != list(range(len(indexed))) or len(indexed) < 2:
        raise DataError(f"{path}: class indices must be 0..N-1 with N >= 2, got {sorted(indexed)}")
    return tuple(str(indexed[i]) for i in range(len(indexed)))


def read_split(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path}: split.csv not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "split"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the header 'id,split', got {reader.fieldnames}")
        splits = {}
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise DataError(f"{path}:{line}: split {row['split']!r} is not one of {list(SPLITS)}")
            problem = id_problem(row["id"])
            if problem is not None:
                raise DataError(f"{path}:{line}: id {row['id']!r} cannot name a file: {problem}")
            if row["id"] in splits:
                raise DataError(f"{path}:{line}: id {row['id']!r} appears twice")
            splits[row["id"]] = row["split"]
    return splits


def open_mask_folder(root: str | Path) -> MaskFolder:
    """Open a mask folder, checking that every listed id has an image and a mask."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data set folder not found")
    classes = read_classes(root / "classes.json")
    splits = read_split(root / "split.csv")
    folder = MaskFolder(root, classes, splits)
    for item_id in splits:
        for p in (folder.image_path(item_id), folder.mask_path(item_id)):
            if not p.is_file():
                raise DataError(f"{p}: listed in split.csv as {item_id!r} but missing")
    return folder


def write_split(path: Path, splits: dict[str, str]) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "split"])
        for item_id in sorted(splits):
            writer.writerow([item_id, splits[item_id]])


def write_item(root: Path, item_id: str, image: np.ndarray, mask: np.ndarray) -> None:
    problem = id_problem(item_id)
    if problem is not None:  # the last guard before an id becomes a path
        raise DataError(f"id {item_id!r} cannot name a file: {problem}")
    write_png(root / "images" / f"{item_id}.png", image)
    write_png(root / "masks" / f"{item_id}.png", mask)


def write_classes(root: Path, classes: tuple[str, ...]) -> None:
    write_json(root / "classes.json", {str(i): name for i, name in enumerate(classes)})
