"""Small file helpers: atomic writes and image reading with errors that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and, where there is one, the key."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; data sets and models are meant to be shared
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise DataError(f"{path}: could not encode PNG")
        tmp.write_bytes(buf.tobytes())


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
