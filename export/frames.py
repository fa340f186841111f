"""Frames for verification and int8 calibration, run through the contract's own preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usseg.runtime.contract import Contract
from usseg.runtime.preprocess import preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VERIFY_FRAMES = 6
CALIBRATION_FRAMES = 32


def image_files(folder: Path, split: str | None = "train") -> list[Path]:
    """Images of a mask folder's split (falling back to all of them) or of a plain image folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    if (folder / "split.csv").is_file() and (folder / "images").is_dir():
        from usseg.train.maskfolder import open_mask_folder

        data = open_mask_folder(folder)
        ids = data.ids(split) or data.ids()
        return [data.image_path(i) for i in ids]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _prepare(frames: list[np.ndarray], contract: Contract) -> np.ndarray:
    spec = contract.input
    return np.stack([preprocess(f, contract.recipe, spec.height, spec.width)[0] for f in frames])[:, None]


def _read(files: list[Path]) -> list[np.ndarray]:
    from usseg.train.io import read_grey8

    return [read_grey8(p) for p in files]


def raw_frames(folder: Path | None, count: int = VERIFY_FRAMES) -> list[np.ndarray]:
    """8-bit grey frames from ``folder`` (val/test first) or phantom frames."""
    if folder is None:
        from usseg.train.phantom import phantom_frames

        return phantom_frames(count, seed=20250)
    files = image_files(folder, split="val") if (folder / "split.csv").is_file() else image_files(folder)
    return _read(files[:count])


def verification_frames(folder: Path | None, contract: Contract, count: int = VERIFY_FRAMES) -> np.ndarray:
    """[N, 1, H, W] float32 model inputs: from ``folder`` (val/test first) or phantom frames."""
    return _prepare(raw_frames(folder, count), contract)


def calibration_files(folder: Path) -> list[Path]:
    """The image files int8 calibration reads from ``folder`` (a mask folder's train split, or an
    image folder), or ExportError saying why there are none; cheap, so it runs before tracing."""
    from usseg.runtime.errors import UssegError

    from .errors import ExportError

    if not folder.is_dir():
        raise ExportError(f"--calibration {folder}: " + ("not a folder" if folder.exists() else "folder not found"))
    try:
        files = image_files(folder, split="train")
    except FileNotFoundError as exc:
        raise ExportError(f"--calibration {exc}") from None
    except UssegError as exc:  # a mask folder whose split.csv or classes.json is wrong
        raise ExportError(f"--calibration {folder}: {exc}") from None
    except OSError as exc:
        raise ExportError(f"--calibration {folder}: cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise ExportError(f"--calibration {folder}: the mask folder lists no frames")
    return files


def calibration_frames(folder: Path, contract: Contract, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Preprocessed training frames ([H, W] float32 each) for int8 calibration."""
    files = calibration_files(folder)
    step = max(1, len(files) // count)
    return [f[0] for f in _prepare(_read(files[::step][:count]), contract)]
