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


_budget = [DEFAULT_MAX_PIXELS]  # this process's pixel budget for training-side reads


def set_max_pixels(value: int) -> None:
    """The pixel budget of every image this process reads for training (prepare, plan, train and
    evaluate set it from ``--max-pixels``), as PIL's ``Image.MAX_IMAGE_PIXELS`` is for PIL: the
    readers are called from many places (importers, the mask folder, the fingerprint), and one
    budget holds for the whole command."""
    _budget[0] = int(value)


def max_pixels() -> int:
    """The budget ``set_max_pixels`` set (``DEFAULT_MAX_PIXELS`` unless a command set another)."""
    return _budget[0]


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """An image as stored: [H, W] grey or [H, W, 3|4] BGR(A) (cv2's order), 8 or 16 bit.

    Raises:
        DataError: naming the file, when it is missing, not a readable image, or its header
        declares more than ``max_pixels`` pixels (default: the process's budget;
        ``usseg.runtime.imageio``: not decoded then).
    """
    try:
        return imageio.read_image(path, _budget[0] if max_pixels is None else max_pixels)
    except imageio.ImageError as exc:
        raise DataError(str(exc)) from None


def read_grey8(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Any supported image as 8-bit grey by the runtime's rule (``to_grey8``: colour in cv2's
    order, 16-bit scaled by its bit depth), or DataError naming the file."""
    from usseg.runtime.preprocess import FrameError, to_grey8

    try:
        return to_grey8(read_image(path, max_pixels))
    except FrameError as exc:
        raise DataError(f"{path}: {exc}") from None
