"""Reading image and DICOM files into frames, with errors that name the file. Torch-free.

One channel order everywhere, OpenCV's: a colour image comes back BGR (BGRA with alpha), as the
frames of ``cv2.VideoCapture`` do, and a colour DICOM file's RGB pixels are turned to BGR; grey
stays [H, W]. Image files keep their stored bit depth (8 or 16 bit):
``usseg.runtime.preprocess.to_grey8`` scales integer frames by their depth. A DICOM file declares
its depth (BitsStored), so frames deeper than 8 bits are scaled here with that depth.

A pixel budget guards every reader against size bombs (a 1 MB PNG can declare 32768x32768
pixels): the frame size is read from the header before anything is decoded (for images with
``imagesize``, which parses PNG, JPEG, TIFF and BMP headers without decoding; for DICOM from
Rows x Columns; for video from the container), and a frame over ``max_pixels`` is refused with a
FrameTooLarge naming its size and the option that raises the limit.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import cv2
import imagesize
import numpy as np

from .errors import UssegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")

# A little above the largest real ultrasound frame (4K capture is 8.3 megapixels): 4096 x 4096.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_PIXELS_OPTION = "--max-pixels"
BYTES_PER_PIXEL = 8        # 16-bit RGBA: an image file larger than max_pixels x this (plus its
FILE_SLACK = 16 << 20      # metadata) cannot hold a frame within the budget


class ImageError(UssegError, ValueError):
    """An image or DICOM file that cannot be read; the message names the file."""


class FrameTooLarge(ImageError):
    """A frame over the pixel budget, found from its header before it was decoded."""


def check_frame_size(where: object, height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise FrameTooLarge when a ``height`` x ``width`` frame is over ``max_pixels``."""
    if height * width > max_pixels:
        raise FrameTooLarge(f"{where}: a frame of {width}x{height} ({height * width:,} pixels) is over the limit of "
                            f"{max_pixels:,} pixels per frame ({MAX_PIXELS_OPTION} N to allow more)")


def add_max_pixels_option(p: argparse.ArgumentParser) -> None:
    """``--max-pixels N``: the pixel budget per frame of a command that reads frames."""
    p.add_argument(MAX_PIXELS_OPTION, type=_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse frames of more than N pixels, read from the file's header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,}: 4096x4096)")


def _max_pixels(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of pixels") from None
    if value < 4:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 4 (a 2x2 frame)")
    return value


def not_a_file(path: Path, kind: str) -> str:
    """Why ``path``, which is not a regular file, cannot be read as a ``kind`` file: the message."""
    if path.is_symlink() and not path.exists():
        return f"{path}: a symbolic link that leads nowhere (broken, or a loop)"
    if path.is_dir():
        return f"{path}: a folder, not a file"
    return f"{path}: not a regular file (a pipe, socket or device)" if path.exists() else f"{path}: {kind} file not found"


def check_model_file(path: Path | None) -> None:
    """--model, when given, is a regular file (a folder, a pipe that would block the read, or a
    looping link is named as such before anything starts); a missing one is left to the model
    loader, which names it."""
    if path is not None and (path.exists() or path.is_symlink()) and not path.is_file():
        raise ImageError(not_a_file(path, "model").replace(f"{path}:", f"--model {path}:", 1))


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as stored: [H, W] grey or [H, W, 3|4] BGR(A), uint8 or uint16.

    Raises:
        FrameTooLarge: the header declares more than ``max_pixels`` pixels.
        ImageError: the file is missing, unreadable, not an image OpenCV can decode, or of a
        format whose header does not give its size.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError(not_a_file(path, "image"))
        size = path.stat().st_size
        if size > max_pixels * BYTES_PER_PIXEL + FILE_SLACK:
            raise FrameTooLarge(f"{path}: a file of {size:,} bytes is larger than an image within the limit of "
                                f"{max_pixels:,} pixels per frame can be ({MAX_PIXELS_OPTION} N to allow more)")
        with open(path, "rb") as f:  # opened here, so that an unreadable file is reported as such
            data = f.read()
    except OSError as exc:  # e.g. a folder on the way that may not be entered
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return decode_image(data, path, max_pixels)


def decode_image(data: bytes, where: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An encoded image (a file's bytes, or an image embedded in an annotation file) decoded as
    :func:`read_image` decodes it: its size read from the header and checked against
    ``max_pixels`` before any pixel is decoded; ``where`` names it in errors."""
    width, height = _header_size(data, where)
    check_frame_size(where, height, width, max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"{where}: not a readable image ({str(exc).strip()[:200]})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{where}: not a readable image")
    if image.shape[:2] != (height, width):  # the header lied; the pixels are what counts from here on
        check_frame_size(where, *image.shape[:2], max_pixels)
    return image


def _header_size(data: bytes, where: object) -> tuple[int, int]:
    """(width, height) from the image header, without decoding; ImageError when it gives none."""
    try:
        width, height = imagesize.get(io.BytesIO(data))
    except Exception:  # noqa: BLE001  (a damaged header: whatever the parser raises)
        width = height = -1
    if width <= 0 or height <= 0:
        raise ImageError(f"{where}: not a readable image")  # no PNG, JPEG, TIFF or BMP header giving a size
    return int(width), int(height)
