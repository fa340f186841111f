"""Where frames come from: image files, folders and globs, video files, cameras, DICOM cines and
plain iterables of numpy frames (the way a frame-grabber SDK feeds them)."""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from . import dicom, imageio
from .dicom import DicomInfo
from .errors import UssegError
from .imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageError


class InputError(UssegError, ValueError):
    """An input file or source that cannot be read; the message names it."""


# -- single files ---------------------------------------------------------------------------------
def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images in name order."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES))
        else:
            out.append(item)
    return out


def read_image(path: Path) -> np.ndarray:
    """One image file in cv2's channel order (``usseg.runtime.imageio``); InputError names it."""
    try:
        return imageio.read_image(path)
    except ImageError as exc:
        raise InputError(str(exc)) from None


def read_frames(path: Path) -> list[np.ndarray]:
    """The frames of one file: one for an image, one or more for a DICOM file."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return list(read_dicom(path))
    return [read_image(path)]


def read_dicom(path: Path) -> np.ndarray:
    """[N, H, W(, C)] frames of a DICOM file (a cine has several); see ``usseg.runtime.dicom``."""
    return read_dicom_info(path)[0]


def read_dicom_info(path: Path) -> tuple[np.ndarray, DicomInfo]:
    """The frames of a DICOM file and its header facts (spacing, frame rate: ``usseg.runtime.dicom``)."""
    try:
        return dicom.read_dicom(path)
    except ImageError as exc:
        raise InputError(str(exc)) from None


# -- streams ----------------------------------------------------------------------------------------
@dataclass
class Frame:
    """One captured frame; ``image`` is None when it could not be read (``error`` says why)."""

    index: int
    image: np.ndarray | None
    captured: float          # time.perf_counter() at capture
    error: str | None = None


class Source:
    """An iterable of Frames with an optional frame rate (for pacing)."""

    name: str = "source"
    fps: float | None = None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class VideoSource(Source):
    """A video file or a camera index through cv2.VideoCapture."""

    def __init__(self, target: str | int) -> None:
        self.name = f"camera {target}" if isinstance(target, int) else str(target)
        if not isinstance(target, int) and not Path(target).is_file():
            raise InputError(f"{target}: video file not found")
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise InputError(f"{self.name}: cannot be opened as a video source")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        self.is_camera = isinstance(target, int)

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                return  # end of file, or a camera that stopped
            yield Frame(index, image, time.perf_counter())
            index += 1

    def close(self) -> None:
        self.capture.release()


class FileSequenceSource(Source):
    """A folder or glob of image files, in name order; unreadable files become error frames."""

    def __init__(self, files: list[Path], name: str, fps: float | None = None) -> None:
        if not files:
            raise InputError(f"{name}: no image files")
        self.files, self.name, self.fps = files, name, fps

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                yield Frame(index, read_image(path), time.perf_counter())
            except InputError as exc:
                yield Frame(index, None, time.perf_counter(), str(exc))


class ArraySource(Source):
    """Any iterable of numpy frames; None or a non-array item becomes an error frame."""

    def __init__(self, frames: Iterable[Any], name: str = "frames", fps: float | None = None) -> None:
        self._frames, self.name, self.fps = frames, name, fps

    def frames(self) -> Iterator[Frame]:
        for index, image in enumerate(self._frames):
            if isinstance(image, np.ndarray):
                yield Frame(index, image, time.perf_counter())
            else:
                yield Frame(index, None, time.perf_counter(), f"frame {index}: got {type(image).__name__}, not an array")


def open_source(source: Any, fps: float | None = None) -> Source:
    """Pick the source type: camera index, folder, glob, DICOM cine, video file, or iterable."""
    if isinstance(source, Source):
        return source
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return VideoSource(int(source))
    if isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            return FileSequenceSource(files, text, fps)
        if any(ch in text for ch in "*?["):
            return FileSequenceSource([Path(p) for p in sorted(glob.glob(text))], text, fps)
        if path.suffix.lower() in DICOM_SUFFIXES:
            frames, info = read_dicom_info(path)
            return ArraySource(list(frames), text, fps or info.fps)
        return VideoSource(text)
    if isinstance(source, np.ndarray) and source.ndim >= 3:
        return ArraySource(list(source), "array", fps)
    if hasattr(source, "__iter__"):
        return ArraySource(source, "frames", fps)
    raise InputError(f"cannot use {type(source).__name__} as a frame source")
