"""Deflated DICOM (1.2.840.10008.1.2.1.99): read like any other, inflated no further than its header allows."""

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from test_dicom import grey_cine, write_dicom
from usseg.runtime import dicom, dicom_deflate
from usseg.runtime.imageio import FrameTooLarge, ImageError


def deflate(path):
    """Rewrite DICOM file ``path`` with the deflated transfer syntax (pydicom deflates on writing)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    return path


def test_a_deflated_cine_reads_as_pydicom_reads_it(tmp_path):
    cine = grey_cine(n=4, h=40, w=48)
    path = deflate(write_dicom(tmp_path / "cine.dcm", cine, FrameTime=25.0, PixelSpacing=[0.1, 0.1]))
    frames, info = dicom.read_dicom(path)
    np.testing.assert_array_equal(frames, cine)
    np.testing.assert_array_equal(frames, pixel_array(pydicom.dcmread(path)))
    assert (info.frames, info.rows, info.columns, info.fps, info.spacing_mm) == (4, 40, 48, 40.0, (0.1, 0.1))
    assert dicom.read_info(path) == info


def test_a_deflated_file_holding_more_than_its_header_says_is_refused_within_the_budget(tmp_path):
    # the header describes one 40x48 frame; the stream holds 64 MiB of pixel data (a 64 kB file)
    path = write_dicom(tmp_path / "bomb.dcm", grey_cine(n=1), stored=np.zeros(64 << 20, np.uint8))
    deflate(path)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"bomb.dcm: the deflated data set inflates beyond the 1,920 pixel bytes "
                                             r"its header describes; refused"):
            dicom.read_dicom(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * dicom_deflate.HEADER_BYTES   # header, pixels and trailer allowance, not 64 MiB


def test_a_deflated_header_over_the_pixel_budget_is_refused_before_the_pixels_are_inflated(tmp_path, monkeypatch):
    path = deflate(write_dicom(tmp_path / "wide.dcm", grey_cine(n=1, h=120, w=100)))
    inflated = []
    real = dicom_deflate._inflate
    monkeypatch.setattr(dicom_deflate, "HEADER_BYTES", 4096)   # the header fits, the pixels do not
    monkeypatch.setattr(dicom_deflate, "_inflate", lambda *a: inflated.append(a[2]) or real(*a))
    with pytest.raises(FrameTooLarge, match=r"wide.dcm: a frame of 100x120 \(12,000 pixels\) is over the limit of "
                                            r"11,999 pixels per frame"):
        dicom.read_dicom(path, max_pixels=11_999)
    assert inflated == [4096]                                  # the header's share only


def test_a_deflated_header_that_does_not_end_in_the_first_megabyte_is_refused(tmp_path):
    path = write_dicom(tmp_path / "long.dcm", grey_cine(n=1))
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091010, "OB", bytes(dicom_deflate.HEADER_BYTES + 1))   # a private element before Pixel Data
    ds.add_new(0x00090010, "LO", "FILLER")
    ds.save_as(path, enforce_file_format=True)
    deflate(path)
    with pytest.raises(ImageError, match=r"long.dcm: the header of this deflated DICOM does not end within "
                                         r"1,048,576 inflated bytes; refused"):
        dicom.read_info(path)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_a_cut_deflated_file_is_one_error_naming_it(tmp_path, keep):
    path = deflate(write_dicom(tmp_path / "cut.dcm", grey_cine(n=2)))
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(ImageError) as caught:
        dicom.read_dicom(path)
    assert str(caught.value).startswith(f"{path}: ")
