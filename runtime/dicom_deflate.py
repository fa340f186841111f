"""A deflated DICOM file (transfer syntax 1.2.840.10008.1.2.1.99) read within a byte budget.

In such a file everything after the file meta group is one raw deflate stream, and pydicom inflates
all of it before any element can be read: a file of a few kB can inflate to gigabytes before its
Rows and Columns are known. Here the stream is inflated in two steps: the first ``HEADER_BYTES``,
where the header up to Pixel Data must lie, and, once the header has passed ``check`` (the pixel
budget), no more than the pixel bytes that header describes plus ``TRAILER_BYTES``. A stream that
holds more is refused by name. The result is a pydicom FileDataset like ``dcmread``'s.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .imageio import ImageError

DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA = 0x7FE00010
HEADER_BYTES = 1 << 20     # inflated bytes the header (every element before Pixel Data) must fit in
TRAILER_BYTES = 1 << 20    # inflated bytes allowed beyond the header and the pixels it describes
PREAMBLE = 128 + 4         # preamble and "DICM"
GROUP_LENGTH_ELEMENT = 12  # (0002,0000) UL in explicit VR: tag 4 + VR 2 + length 2 + value 4


def is_deflated(meta: Any) -> bool:
    return str(getattr(meta, "TransferSyntaxUID", "")) == DEFLATED


def read_deflated(path: Path, meta: Any, header_only: bool, check: Callable[[Any], int]) -> Any:
    """The dataset of deflated file ``path`` whose file meta group ``meta`` has been read.

    ``check(header)`` validates the header (a Dataset without Pixel Data), raises ImageError when
    it is refused, and returns the pixel bytes it describes. ``header_only``: stop there.
    """
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    length = getattr(meta, "FileMetaInformationGroupLength", None)
    if not isinstance(length, int) or length < 0:
        raise ImageError(f"{path}: deflated DICOM without a usable File Meta Information Group Length")
    raw = path.read_bytes()
    start = PREAMBLE + GROUP_LENGTH_ELEMENT + length
    if raw[128:132] != b"DICM" or start > len(raw):
        raise ImageError(f"{path}: deflated DICOM whose file meta group does not fit the file")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = _inflate(inflater, raw[start:], HEADER_BYTES, path)
    reached = []

    def at_pixels(tag: Any, vr: Any, size: int) -> bool:
        if tag == PIXEL_DATA:
            reached.append(True)
        return tag == PIXEL_DATA

    try:
        header = read_dataset(DicomBytesIO(head), False, True, stop_when=at_pixels)
    except Exception as exc:  # noqa: BLE001  (pydicom raises many kinds on a damaged data set)
        raise ImageError(f"{path}: not a readable DICOM data set ({str(exc)[:200]})") from None
    if not reached and not inflater.eof:
        raise ImageError(f"{path}: the header of this deflated DICOM does not end within "
                         f"{HEADER_BYTES:,} inflated bytes; refused")
    pixel_bytes = check(header)
    if not header_only:
        rest = _inflate(inflater, inflater.unconsumed_tail, max(HEADER_BYTES + pixel_bytes + TRAILER_BYTES - len(head), 1),
                        path)
        if not inflater.eof and _inflate(inflater, inflater.unconsumed_tail, 1, path):
            raise ImageError(f"{path}: the deflated data set inflates beyond the {pixel_bytes:,} pixel bytes its "
                             "header describes; refused")
        try:
            header = read_dataset(DicomBytesIO(head + rest), False, True)
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{path}: not a readable DICOM data set ({str(exc)[:200]})") from None
    return FileDataset(str(path), header, preamble=raw[:128], file_meta=meta,
                       is_implicit_VR=False, is_little_endian=True)


def _inflate(inflater: Any, data: bytes, limit: int, path: Path) -> bytes:
    """At most ``limit`` bytes more of the stream (what is left stays in the inflater)."""
    try:
        return inflater.decompress(data, limit)
    except zlib.error as exc:
        raise ImageError(f"{path}: the deflated data set cannot be inflated ({exc})") from None
