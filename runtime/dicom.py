"""DICOM read the way ultrasound systems write it: frames, pixel spacing, frame rate. Torch-free.

- Spacing: the Sequence of Ultrasound Regions (0018,6011), from its 2D region (the largest when
  there are several) whose Physical Units X / Y Direction are cm: Physical Delta X / Y, cm -> mm;
  else Pixel Spacing (0028,0030: row, column, mm). The region's top row is the top of the field
  of view, where depths are measured from.
- Frame rate: Frame Time (0018,1063, ms per frame), else Cine Rate (0018,0040, frames/s), else
  Recommended Display Frame Rate (0008,2144).
- Pixels: MONOCHROME1 (0 is white) is inverted; YBR colour spaces are converted to RGB by pydicom
  and returned in cv2's BGR order; bits above Bits Stored are masked off, and frames deeper than
  8 bits become 8-bit grey scaled by Bits Stored (``usseg.runtime.preprocess.to_grey8``).

Every header value is type- and range-checked before use; a value that fails is ignored with a
warning that names it, and the next source is tried. A spacing the user gives wins over the file's
(:func:`calibration_for`), and outputs say which one was used (``spacing_source``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dicom_deflate import is_deflated, read_deflated
from .imageio import DEFAULT_MAX_PIXELS, DICOM_SUFFIXES, ImageError, check_frame_size

log = logging.getLogger("usseg.dicom")

CM = 3                        # Physical Units code for cm (PS3.3 C.8.5.5.1.15)
REGION_2D = 1                 # Region Spatial Format: 2D (tissue or flow)
MAX_SPACING_MM = 10.0         # a larger "spacing" is not a B-mode image
MAX_PIXELS = 1 << 31          # frames x rows x columns x samples refused above this (the whole file is decoded)
ANISOTROPY = 0.01             # row and column spacing closer than 1 % are taken as one spacing
SOURCES = ("user", "ultrasound-regions", "pixel-spacing", "none")


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM header says about its frames."""

    frames: int
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_stored: int
    spacing_mm: tuple[float, float] | None = None   # (row, column) mm per pixel
    spacing_source: str | None = None               # "ultrasound-regions" | "pixel-spacing"
    fps: float | None = None
    fps_source: str | None = None                   # "frame-time" | "cine-rate" | "display-frame-rate"
    region: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 of the region the spacing came from

    @property
    def isotropic_spacing_mm(self) -> float | None:
        """One mm-per-pixel figure when rows and columns agree within 1 %, else None."""
        if self.spacing_mm is None:
            return None
        row, col = self.spacing_mm
        return (row + col) / 2 if abs(row - col) <= ANISOTROPY * max(row, col) else None

    @property
    def skin_y(self) -> float:
        """Row of the top of the field of view: the ultrasound region's top, else the frame's."""
        return float(self.region[1]) if self.region is not None else 0.0


@dataclass(frozen=True)
class Calibration:
    """The spacing used for one input, where it came from, and the skin line's row."""

    spacing_mm: float | None
    spacing_source: str = "none"   # one of SOURCES
    skin_y: float = 0.0

    def apply(self, result: Any) -> Any:
        """Give a Result this spacing and skin line (its mm geometry and readouts follow)."""
        result.spacing_mm, result.skin_y = self.spacing_mm, self.skin_y
        return result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_dicom_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in DICOM_SUFFIXES


# -- header values, checked ---------------------------------------------------------------------------
def _number(item: Any, keyword: str, where: str) -> float | None:
    """A finite number from ``item.keyword``, or None (absent, empty or malformed: warned)."""
    value = getattr(item, keyword, None)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        log.warning("%s: %s %r is not a number; ignored", where, keyword, value)
        return None
    if not math.isfinite(number):
        log.warning("%s: %s %r is not finite; ignored", where, keyword, value)
        return None
    return number


def _spacing_ok(row: float | None, col: float | None, field: str, where: str) -> bool:
    if row is None or col is None:
        return False
    if not (0 < row <= MAX_SPACING_MM and 0 < col <= MAX_SPACING_MM):
        log.warning("%s: %s gives %.4g x %.4g mm per pixel, outside (0, %g]; ignored", where, field, row, col,
                    MAX_SPACING_MM)
        return False
    return True


def _region_spacing(ds: Any, where: str) -> tuple[tuple[float, float], tuple[int, int, int, int]] | None:
    """(row, column) mm and the region box from the largest 2D region measured in cm."""
    best = None
    for n, region in enumerate(getattr(ds, "SequenceOfUltrasoundRegions", None) or []):
        here = f"{where}: ultrasound region {n}"
        fmt = _number(region, "RegionSpatialFormat", here)
        ux, uy = _number(region, "PhysicalUnitsXDirection", here), _number(region, "PhysicalUnitsYDirection", here)
        if fmt != REGION_2D or ux != CM or uy != CM:
            continue
        dx, dy = _number(region, "PhysicalDeltaX", here), _number(region, "PhysicalDeltaY", here)
        if dx is None or dy is None:
            continue
        row, col = abs(dy) * 10.0, abs(dx) * 10.0   # cm -> mm; the sign only says the axis direction
        if not _spacing_ok(row, col, "Physical Delta Y / X", here):
            continue
        corners = [_number(region, k, here) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                      "RegionLocationMaxX1", "RegionLocationMaxY1")]
        box = None
        if all(c is not None and c >= 0 for c in corners) and corners[2] > corners[0] and corners[3] > corners[1]:
            box = tuple(int(c) for c in corners)
        area = 0 if box is None else (box[2] - box[0]) * (box[3] - box[1])
        if best is None or area > best[0]:
            best = (area, (row, col), box)
    return None if best is None else (best[1], best[2])


def _pixel_spacing(ds: Any, where: str) -> tuple[float, float] | None:
    value = getattr(ds, "PixelSpacing", None)
    if value is None:
        return None
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        log.warning("%s: Pixel Spacing %r is not two numbers; ignored", where, value)
        return None
    if not (math.isfinite(row) and math.isfinite(col)) or not _spacing_ok(row, col, "Pixel Spacing", where):
        return None
    return row, col


def _frame_rate(ds: Any, where: str) -> tuple[float | None, str | None]:
    frame_time = _number(ds, "FrameTime", where)
    if frame_time is not None and 0 < frame_time <= 60_000:
        return 1000.0 / frame_time, "frame-time"
    for keyword, source in (("CineRate", "cine-rate"), ("RecommendedDisplayFrameRate", "display-frame-rate")):
        rate = _number(ds, keyword, where)
        if rate is not None and 0 < rate <= 10_000:
            return rate, source
    return None, None


def _int(ds: Any, keyword: str, default: int, low: int, high: int, where: str) -> int:
    value = _number(ds, keyword, where)
    if value is None:
        return default
    if value != int(value) or not low <= value <= high:
        raise ImageError(f"{where}: {keyword} {value:g} is outside {low}..{high}")
    return int(value)


def info_from_dataset(ds: Any, where: str = "DICOM", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DicomInfo:
    """The checked header facts of a pydicom Dataset (pixel data not needed); a frame of more than
    ``max_pixels`` (Rows x Columns) is refused with FrameTooLarge before any pixel is decoded
    (None: no budget, for reading the header alone)."""
    rows, cols = _int(ds, "Rows", 0, 1, 65535, where), _int(ds, "Columns", 0, 1, 65535, where)
    frames = _int(ds, "NumberOfFrames", 1, 1, 1_000_000, where)
    samples = _int(ds, "SamplesPerPixel", 1, 1, 4, where)
    allocated = _int(ds, "BitsAllocated", 8, 1, 64, where)
    bits = _int(ds, "BitsStored", allocated, 1, allocated, where)
    if max_pixels is not None:
        check_frame_size(where, rows, cols, max_pixels)
    if frames * rows * cols * samples > MAX_PIXELS:
        raise ImageError(f"{where}: {frames} frames of {rows}x{cols}x{samples} is too large to read")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    spacing, source, box = None, None, None
    found = _region_spacing(ds, where)
    if found is not None:
        (spacing, box), source = found, "ultrasound-regions"
    else:
        spacing = _pixel_spacing(ds, where)
        source = None if spacing is None else "pixel-spacing"
    fps, fps_source = _frame_rate(ds, where)
    return DicomInfo(frames, rows, cols, samples, photometric, bits, spacing, source, fps, fps_source, box)


# -- reading -----------------------------------------------------------------------------------------
def _dcmread(path: Path, header_only: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Any:
    """pydicom's dataset of ``path``; a deflated file is inflated no further than the pixels its
    header describes, once that header has passed ``max_pixels`` (dicom_deflate.py)."""
    try:
        import pydicom
        from pydicom.filereader import read_file_meta_info
    except ImportError:
        raise ImageError(f"{path}: DICOM needs pydicom (pip install 'usseg[dicom]')") from None
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        meta = read_file_meta_info(path)
        if is_deflated(meta):
            return read_deflated(path, meta, header_only,
                                 lambda header: pixel_bytes(info_from_dataset(header, str(path), max_pixels), header))
        return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001  (pydicom raises many kinds on a damaged file)
        raise ImageError(f"{path}: not a readable DICOM file ({str(exc)[:200]})") from None


def pixel_bytes(info: DicomInfo, ds: Any) -> int:
    """The bytes of native pixel data ``info`` describes (Bits Allocated per sample, rounded up to
    whole bytes: an upper bound for 1-bit data)."""
    allocated = _int(ds, "BitsAllocated", 8, 1, 64, "DICOM")
    return info.frames * info.rows * info.columns * info.samples * -(-allocated // 8)


def read_info(path: str | os.PathLike) -> DicomInfo:
    """The header facts of a DICOM file, without decoding its pixels."""
    path = Path(path)
    return info_from_dataset(_dcmread(path, header_only=True, max_pixels=None), str(path), max_pixels=None)


def frames_from_dataset(ds: Any, info: DicomInfo, where: str = "DICOM") -> np.ndarray:
    """[N, H, W] grey or [N, H, W, 3] BGR frames: 8-bit as stored, deeper ones 8-bit grey."""
    from pydicom.pixels import pixel_array

    try:
        pixels = np.asarray(pixel_array(ds, as_rgb=True))   # YBR_* -> RGB
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{where}: pixel data cannot be decoded ({str(exc)[:200]})") from None
    if info.frames == 1:
        pixels = pixels[None]
    expected = (info.rows, info.columns) + ((info.samples,) if info.samples > 1 else ())
    if pixels.shape[1:] != expected:
        raise ImageError(f"{where}: pixel data of shape {pixels.shape[1:]} does not match the header's {expected}")
    if pixels.dtype.kind == "u" and info.bits_stored < pixels.dtype.itemsize * 8:
        pixels = pixels & pixels.dtype.type((1 << info.bits_stored) - 1)
    if info.photometric == "MONOCHROME1":
        if pixels.dtype.kind != "u":
            raise ImageError(f"{where}: signed MONOCHROME1 pixels are not supported")
        pixels = pixels.dtype.type((1 << info.bits_stored) - 1) - pixels
    if info.samples == 3:
        pixels = pixels[..., ::-1]                            # RGB -> BGR
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint8 and info.bits_stored == 8:
        return pixels
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.uint16)   # fewer than 8 bits: scaled up by to_grey8 below
    from .preprocess import FrameError, to_grey8

    try:
        return np.stack([to_grey8(frame, info.bits_stored) for frame in pixels])
    except FrameError as exc:
        raise ImageError(f"{where}: {exc}") from None


def read_dicom(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, DicomInfo]:
    """The frames of a DICOM file (see :func:`frames_from_dataset`) and its header facts.

    Raises:
        FrameTooLarge: its Rows x Columns is over ``max_pixels`` (checked before decoding).
        ImageError: pydicom is missing; the file is missing, unreadable, too large, or its pixels
        cannot be decoded or have negative values.
    """
    path = Path(path)
    ds = _dcmread(path, header_only=False, max_pixels=max_pixels)
    info = info_from_dataset(ds, str(path), max_pixels)
    return frames_from_dataset(ds, info, str(path)), info


# -- which spacing is used ------------------------------------------------------------------------------
def calibration(user_mm: float | None, info: DicomInfo | None, where: str = "input") -> Calibration:
    """The user's spacing when given, else the file's (one figure: rows and columns must agree)."""
    skin_y = info.skin_y if info is not None else 0.0
    if user_mm is not None:
        return Calibration(float(user_mm), "user", skin_y)
    if info is None or info.spacing_mm is None:
        return Calibration(None, "none", skin_y)
    iso = info.isotropic_spacing_mm
    if iso is None:
        row, col = info.spacing_mm
        log.warning("%s: the file's pixel spacing differs between rows (%.4g mm) and columns (%.4g mm); "
                    "not used (give --spacing)", where, row, col)
        return Calibration(None, "none", skin_y)
    return Calibration(iso, info.spacing_source or "none", skin_y)


def calibration_for(user_mm: float | None, path: str | os.PathLike | None) -> Calibration:
    """:func:`calibration` for an input path: a DICOM file's header is read (not its pixels)."""
    if path is None or not is_dicom_path(path) or not Path(path).is_file():
        return calibration(user_mm, None)
    return calibration(user_mm, read_info(path), str(path))
