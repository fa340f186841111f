"""Reading image and DICOM files into frames, with errors that name the file. Torch-free.

One channel order everywhere, OpenCV's: a colour image comes back BGR (BGRA with alpha), as the
frames of ``cv2.VideoCapture`` do, and a colour DICOM file's RGB pixels are turned to BGR; grey
stays [H, W]. Image files keep their stored bit depth (8 or 16 bit):
``usseg.runtime.preprocess.to_grey8`` scales integer frames by their depth. A DICOM file declares
its depth (BitsStored), so frames deeper than 8 bits are scaled here with that depth.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import UssegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageError(UssegError, ValueError):
    """An image or DICOM file that cannot be read; the message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as stored: [H, W] grey or [H, W, 3|4] BGR(A), uint8 or uint16.

    Raises:
        ImageError: the file is missing, unreadable or not an image OpenCV can decode.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError(f"{path}: image file not found")
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except OSError as exc:  # e.g. a folder on the way that may not be entered
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except cv2.error as exc:
        raise ImageError(f"{path}: not a readable image ({str(exc).strip()[:200]})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a readable image")
    return image
