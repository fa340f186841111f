"""``--from nnunet``: an nnU-Net v2 raw data set folder (``DatasetXXX_Name/``).

``dataset.json`` gives the classes (``labels``: name -> value, background 0, values 0..N-1) and
``file_ending``; a case is ``imagesTr/<case>_0000<ending>`` with ``labelsTr/<case><ending>``. A
labelled test case (``imagesTs/`` with ``labelsTs/``) is kept in the test split; a test image
without a label is counted and left out. Only channel 0 (``_0000``) is read: usseg trains on
one grey channel. PNG (and the other 2D image endings nnU-Net reads) through OpenCV; NIfTI
(``.nii.gz``, ``.nii``) of a 2D data set (one slice) through nibabel, the ``nifti`` extra,
with the array's axes read as nnU-Net's SimpleITK reads them (x columns, y rows).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from usseg.runtime.preprocess import FrameError, to_grey8

from ..io import DataError, read_image
from ..problems import EntryError, ProblemLog
from .base import Imported, ImportedFrame, SourceOptions, frame_key, load_json, read_frame_image, reported, user_classes

IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
NIFTI_ENDINGS = (".nii.gz", ".nii")
MAX_PIXELS = 1 << 28  # one slice; refused from the header, before the pixels are read


def _labels(doc: dict, where: str) -> dict[str, int]:
    labels = doc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{where}: 'labels' must map class names to label values, e.g. {{\"background\": 0, ...}}")
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(f"{where}: labels[{name!r:.60}] is a region ({value!r:.40}); region-based training is "
                            f"not supported: give each class one label value")
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"{where}: labels[{name!r:.60}] must be an integer, got {value!r:.40}")
    if sorted(labels.values()) != list(range(len(labels))) or labels.get("background", 0) != 0:
        raise DataError(f"{where}: label values must be 0..{len(labels) - 1}, background 0, each once; got "
                        f"{sorted(labels.values())[:20]}")
    return labels


def read_nifti(path: Path, where: str) -> np.ndarray:
    """One 2D slice of a NIfTI file as [rows, columns] (the file's x axis is the columns)."""
    try:
        import nibabel
    except ImportError:
        raise DataError(f"{path}: NIfTI files need nibabel: pip install \"usseg[nifti]\"") from None
    unreadable = (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error)
    try:
        img = nibabel.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except unreadable as exc:
        raise EntryError(f"{where}: {path.name} is not a readable NIfTI file ({str(exc)[:120]})", "image") from None
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
        raise EntryError(f"{where}: {path.name} holds a {'x'.join(map(str, shape))} volume; a 2D data set "
                         f"stores one slice per file", "size")
    if shape[0] * shape[1] > MAX_PIXELS:
        raise EntryError(f"{where}: {path.name} is {shape[0]}x{shape[1]} pixels, more than {MAX_PIXELS}", "size")
    try:
        data = np.asarray(img.dataobj).reshape(shape[:2])
    except unreadable as exc:
        raise EntryError(f"{where}: {path.name}: its pixels cannot be read ({str(exc)[:120]})", "image") from None
    return np.ascontiguousarray(data.T)


def read_slice(path: Path, where: str, nifti: bool, image: bool) -> np.ndarray:
    if not path.is_file():
        raise EntryError(f"{where}: {path} not found", "image")
    if image:
        if not nifti:
            return read_frame_image(path, where)
        try:
            return to_grey8(read_nifti(path, where))
        except FrameError as exc:
            raise EntryError(f"{where}: {path.name}: {exc}", "image") from None
    if nifti:
        return read_nifti(path, where)
    try:
        return read_image(path)
    except DataError as exc:
        raise EntryError(str(exc), "mask") from None


def label_mask(values: np.ndarray, lut: np.ndarray, path: Path, where: str) -> np.ndarray:
    """Label values -> class indices; a value dataset.json does not list is an unknown label."""
    if values.ndim != 2 or not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise EntryError(f"{where}: {path.name} must be a one-channel label map, got {values.shape} {values.dtype}",
                         "mask")
    found = np.unique(values)
    bad = [v for v in found.tolist() if not (float(v).is_integer() and 0 <= v < len(lut) and lut[int(v)] >= 0)]
    if bad:
        raise EntryError(f"{where}: {path.name} holds label value {bad[0]:g}, which is not one of "
                         f"dataset.json's labels (or not in --classes)", "label")
    return lut[values.astype(np.int64)].astype(np.uint8)


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    root = options.annotations
    where = str(root / "dataset.json")
    doc = load_json(root / "dataset.json")
    if not isinstance(doc, dict):
        raise DataError(f"{where}: expected an object with 'labels' and 'file_ending'")
    labels = _labels(doc, where)
    ending = doc.get("file_ending")
    if ending not in IMAGE_ENDINGS + NIFTI_ENDINGS:
        raise DataError(f"{where}: file_ending {ending!r:.40}; usseg reads {list(IMAGE_ENDINGS + NIFTI_ENDINGS)}")
    nifti = ending in NIFTI_ENDINGS
    channels: Any = doc.get("channel_names", doc.get("modality", {"0": "?"}))
    if isinstance(channels, dict) and len(channels) > 1:
        problems.note("channel left out", f"{where}: {len(channels)} channels; only channel 0 (_0000) is read")
    names = [name for name, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    classes = user_classes(options, tuple(names[1:]), where)
    lut = np.array([0] + [classes.index(n) if n in classes else -1 for n in names[1:]], np.int64)
    cases: list[tuple[Path, Path, str | None]] = []
    for images, labels_dir, split in (("imagesTr", "labelsTr", None), ("imagesTs", "labelsTs", "test")):
        for image_path in sorted((root / images).glob(f"*_0000{ending}")):
            case = image_path.name[:-len(f"_0000{ending}")]
            label_path = root / labels_dir / f"{case}{ending}"
            if label_path.is_file() or split is None:
                cases.append((image_path, label_path, split))
            else:
                problems.note("test image without a label", f"{image_path}: no {labels_dir}/{label_path.name}")
    if not cases:
        raise DataError(f"{root}: no cases (imagesTr/<case>_0000{ending} with labelsTr/<case>{ending})")

    def frame(image_path: Path, label_path: Path, split: str | None) -> ImportedFrame:
        at = str(label_path)
        key = frame_key(Path(label_path.name[:-len(ending)]), at)
        image = read_slice(image_path, at, nifti, image=True)
        mask = label_mask(read_slice(label_path, at, nifti, image=False), lut, label_path, at)
        if mask.shape != image.shape:
            raise EntryError(f"{at}: label size {mask.shape[1]}x{mask.shape[0]} differs from {image_path.name}'s "
                             f"{image.shape[1]}x{image.shape[0]}", "size")
        return ImportedFrame(key, image, mask, split)

    return Imported(classes, reported(cases, frame, problems))
