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


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """[N, H, W] or [N, H, W, 3] frames of a DICOM file (a cine has several), colour as BGR.

    8-bit pixels are returned as stored; deeper ones become 8-bit grey by ``to_grey8``'s rule with
    the file's BitsStored as the depth, so a 12-bit cine keeps its 4096 levels' range and every
    frame of it the same scale.

    Raises:
        ImageError: pydicom is missing, or the file is missing, unreadable or has negative pixels.
    """
    path = Path(path)
    try:
        import pydicom
    except ImportError:
        raise ImageError(f"{path}: DICOM needs pydicom (pip install 'usseg[dicom]')") from None
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(str(path))
        pixels = np.asarray(ds.pixel_array)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        bits = getattr(ds, "BitsStored", None)
    except Exception as exc:  # noqa: BLE001  (pydicom raises many kinds on a damaged file)
        raise ImageError(f"{path}: not a readable DICOM file ({exc})") from None
    pixels = pixels if frames > 1 else pixels[None]
    if samples == 3 and pixels.ndim == 4:
        pixels = np.ascontiguousarray(pixels[..., ::-1])  # pydicom gives RGB
    if pixels.dtype == np.uint8:
        return pixels
    from .preprocess import FrameError, to_grey8

    declared = int(bits) if isinstance(bits, int) and 1 <= bits <= 64 else None
    try:
        return np.stack([to_grey8(frame, declared) for frame in pixels])
    except FrameError as exc:
        raise ImageError(f"{path}: {exc}") from None
