"""Where frames come from: image files, folders and globs, video files, cameras, DICOM cines and
plain iterables of numpy frames (the way a frame-grabber SDK feeds them)."""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from . import dicom, imageio
from .dicom import DicomInfo
from .errors import UssegError
from .imageio import DEFAULT_MAX_PIXELS, DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageError, check_frame_size


class InputError(UssegError, ValueError):
    """An input file or source that cannot be read; the message names it."""


class SourceError(InputError):
    """A stream source that opened but broke while being read (a camera unplugged, a video file
    that ends before the frames it declares)."""


# -- single files ---------------------------------------------------------------------------------
def expand_inputs(inputs: list[str | Path], errors: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files as given, folders expanded to their images in name order; a file given twice (by any
    path to it) is kept once. A folder that cannot be listed raises InputError, or with ``errors``
    is appended there as (folder, message) and skipped."""
    out: list[Path] = []
    seen: set[str] = set()
    for item in map(Path, inputs):
        try:
            is_dir = item.is_dir()
        except OSError:
            is_dir = False  # reading it as a file reports why, for this file alone
        try:
            files = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES) \
                if is_dir else [item]
        except OSError as exc:
            message = f"{item}: cannot list this folder ({exc.strerror or exc})"
            if errors is None:
                raise InputError(message) from None
            errors.append((str(item), message))
            continue
        for path in files:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                out.append(path)
    return out


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image file in cv2's channel order (``usseg.runtime.imageio``); InputError names it."""
    try:
        return imageio.read_image(path, max_pixels)
    except ImageError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # e.g. a folder on the way that may not be entered
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_frames(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """The frames of one file: one for an image, one or more for a DICOM file."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return list(read_dicom(path, max_pixels))
    return [read_image(path, max_pixels)]


def read_dicom(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """[N, H, W(, C)] frames of a DICOM file (a cine has several); see ``usseg.runtime.dicom``."""
    return read_dicom_info(path, max_pixels)[0]


def read_dicom_info(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, DicomInfo]:
    """The frames of a DICOM file and its header facts (spacing, frame rate: ``usseg.runtime.dicom``)."""
    try:
        return dicom.read_dicom(path, max_pixels)
    except ImageError as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


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
    """A video file or a camera index through cv2.VideoCapture. The frame size the container (or
    camera) declares is checked against the pixel budget before the first frame is read, and each
    frame's own size after it is (a stream may change size part way)."""

    def __init__(self, target: str | int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.name = f"camera {target}" if isinstance(target, int) else str(target)
        if not isinstance(target, int) and not Path(target).is_file():
            raise InputError(imageio.not_a_file(Path(target), "video"))
        self.max_pixels = max_pixels
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise InputError(f"{self.name}: cannot be opened as a video source")
        try:
            check_frame_size(self.name, int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                             int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), max_pixels)
        except ImageError as exc:
            self.capture.release()
            raise InputError(str(exc)) from None
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        self.is_camera = isinstance(target, int)
        declared = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(declared) if not self.is_camera and declared and declared > 0 else None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                break
            try:
                check_frame_size(f"{self.name} frame {index}", *image.shape[:2], self.max_pixels)
            except ImageError as exc:  # this frame fails, the stream goes on
                yield Frame(index, None, time.perf_counter(), str(exc))
            else:
                yield Frame(index, image, time.perf_counter())
            index += 1
        # A camera has no end: a failed read means it went away. A file whose header declares more
        # frames than could be read is truncated or unreadable part way (one frame of slack: some
        # containers only estimate the count).
        if self.is_camera:
            raise SourceError(f"{self.name}: stopped delivering frames after {index} (unplugged or failed)")
        if self.declared_frames is not None and index + 1 < self.declared_frames:
            raise SourceError(f"{self.name}: could read only {index} of the {self.declared_frames} frames "
                              f"the file declares (truncated or damaged)")

    def close(self) -> None:
        self.capture.release()


class FileSequenceSource(Source):
    """A folder or glob of image files, in name order; unreadable files become error frames."""

    def __init__(self, files: list[Path], name: str, fps: float | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not files:
            raise InputError(f"{name}: no image files")
        self.files, self.name, self.fps, self.max_pixels = files, name, fps, max_pixels

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                image = read_image(path, self.max_pixels)
            except InputError as exc:  # this frame fails, the stream goes on
                yield Frame(index, None, time.perf_counter(), str(exc))
            except MemoryError:
                yield Frame(index, None, time.perf_counter(), f"{path}: out of memory while reading it")
            else:
                yield Frame(index, image, time.perf_counter())


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


def open_source(source: Any, fps: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    """Pick the source type: camera index, folder, glob, DICOM cine, video file, or iterable.
    Files, folders, DICOM and video refuse frames over ``max_pixels`` (read from their headers)."""
    if isinstance(source, Source):
        return source
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return VideoSource(int(source), max_pixels)
    if isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            return FileSequenceSource(files, text, fps, max_pixels)
        if any(ch in text for ch in "*?["):
            return FileSequenceSource([Path(p) for p in sorted(glob.glob(text))], text, fps, max_pixels)
        if path.suffix.lower() in DICOM_SUFFIXES:
            frames, info = read_dicom_info(path, max_pixels)
            return ArraySource(list(frames), text, fps or info.fps)
        return VideoSource(text, max_pixels)
    if isinstance(source, np.ndarray) and source.ndim >= 3:
        return ArraySource(list(source), "array", fps)
    if hasattr(source, "__iter__"):
        return ArraySource(source, "frames", fps)
    raise InputError(f"cannot use {type(source).__name__} as a frame source")
