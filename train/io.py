"""Image reading for training, with DataError naming the file (the reader itself is
usseg.runtime.imageio, shared with the runtime; atomic writes live in usseg.runtime.fileio)."""

from __future__ import annotations

import os

import numpy as np

from usseg.runtime import imageio
from usseg.runtime.errors import UssegError
from usseg.runtime.fileio import atomic_path, write_json, write_png  # noqa: F401  (re-exported)
from usseg.runtime.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES  # noqa: F401  (re-exported)


class DataError(UssegError, ValueError):
    """Input data that cannot be used; the message names the file and, where there is one, the key."""


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image as stored: [H, W] grey or [H, W, 3|4] BGR(A) (cv2's order), 8 or 16 bit.

    Raises:
        DataError: naming the file, when it is missing, not a readable image, or its header
        declares more than ``max_pixels`` pixels (``usseg.runtime.imageio``: not decoded then).
    """
    try:
        return imageio.read_image(path, max_pixels)
    except imageio.ImageError as exc:
        raise DataError(str(exc)) from None


def read_grey8(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported image as 8-bit grey by the runtime's rule (``to_grey8``: colour in cv2's
    order, 16-bit scaled by its bit depth), or DataError naming the file."""
    from usseg.runtime.preprocess import FrameError, to_grey8

    try:
        return to_grey8(read_image(path, max_pixels))
    except FrameError as exc:
        raise DataError(f"{path}: {exc}") from None
