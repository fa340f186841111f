"""Image reading with errors that name the file (atomic writes live in usseg.runtime.fileio)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from usseg.runtime.errors import UssegError
from usseg.runtime.fileio import atomic_path, write_json, write_png  # noqa: F401  (re-exported)


class DataError(UssegError, ValueError):
    """Input data that cannot be used; the message names the file and, where there is one, the key."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as stored (grey, RGB or RGBA; 8 or 16 bit) or raise DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image")
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image


def read_grey8(path: str | os.PathLike) -> np.ndarray:
    """Read any supported image as 8-bit grey (the runtime's conversion) or raise DataError."""
    from usseg.runtime.preprocess import FrameError, to_grey8

    image = read_image(path)
    if image.ndim == 3:  # to_grey8 expects BGR(A) order like cv2 frames
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    try:
        return to_grey8(image)
    except FrameError as exc:
        raise DataError(f"{path}: {exc}") from None
