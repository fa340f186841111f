"""Integer frames are scaled by their bit depth, declared or detected, in training and at run time."""

import cv2
import numpy as np
import pytest

from usseg.runtime.preprocess import FrameError, get_recipe, preprocess, to_grey8


def ramp(levels: int, dtype=np.uint16) -> np.ndarray:
    """Every level 0..levels-1 once, as a 2-D frame."""
    return np.arange(levels, dtype=dtype).reshape(-1, 64)


def expected(values: np.ndarray, bits: int) -> np.ndarray:
    """The documented rule: round(v * 255 / (2**bits - 1)), computed in exact integers."""
    top = (1 << bits) - 1
    v = np.minimum(values.astype(object), top)
    return np.array((v * 510 + top) // (2 * top), dtype=np.uint8)


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_deep_frames_keep_their_range(bits):
    frame = ramp(1 << bits)
    grey = to_grey8(frame)
    np.testing.assert_array_equal(grey, expected(frame, bits))
    assert len(np.unique(grey)) == 256 and grey.min() == 0 and grey.max() == 255
    assert (np.diff(grey.ravel().astype(int)) >= 0).all()  # monotone


def test_a_12_bit_frame_is_no_longer_crushed():
    frame = ramp(4096)
    assert len(np.unique(to_grey8(frame))) == 256
    assert len(np.unique((frame / 257.0 + 0.5).astype(np.uint8))) == 17  # all that value / 257 kept


def test_full_range_uint16_is_value_over_257():
    frame = ramp(65536)
    np.testing.assert_array_equal(to_grey8(frame), (frame.astype(np.float64) / 257 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.int16])
def test_wide_integer_types_follow_the_same_rule(dtype):
    frame = ramp(1024, dtype)
    np.testing.assert_array_equal(to_grey8(frame), expected(frame, 10))
    big = (ramp(1024, np.int64) << 10).astype(dtype) if np.iinfo(dtype).bits >= 32 else frame
    if big is not frame:  # 20-bit values: scaled, not clipped at 255
        np.testing.assert_array_equal(to_grey8(big), expected(big, 20))


def test_frames_within_8_bits_are_unchanged_whatever_their_type():
    frame = ramp(256, np.uint16)
    np.testing.assert_array_equal(to_grey8(frame), frame.astype(np.uint8))
    np.testing.assert_array_equal(to_grey8(frame.astype(np.int32)), frame.astype(np.uint8))


def test_a_declared_depth_wins_over_the_frames_maximum():
    frame = (ramp(1024) * 3).astype(np.uint16)  # 12-bit data whose brightest pixel is 3069
    np.testing.assert_array_equal(to_grey8(frame, bits=12), expected(frame, 12))
    np.testing.assert_array_equal(to_grey8(frame), expected(frame, 12))
    dark = ramp(1024)  # the same 12-bit source, a dark frame: detection would say 10 bits
    np.testing.assert_array_equal(to_grey8(dark, bits=12), expected(dark, 12))
    assert to_grey8(dark, bits=12).max() == 64 and to_grey8(dark).max() == 255
    over = np.full((4, 4), 5000, np.uint16)
    assert (to_grey8(over, bits=12) == 255).all()  # above the declared depth: saturates
    np.testing.assert_array_equal(to_grey8(ramp(256, np.uint8), bits=12), ramp(256, np.uint8))  # uint8 as is


@pytest.mark.parametrize("bad,words", [
    (np.array([[-1, 5], [7, 9]], np.int16), "negative values"),
    (np.array([[-(1 << 40), 5], [7, 9]], np.int64), "minimum -1099511627776"),
])
def test_negative_values_are_refused(bad, words):
    with pytest.raises(FrameError, match=words):
        to_grey8(bad)


@pytest.mark.parametrize("bits", [0, 65, True, 12.0, "12"])
def test_a_bad_declared_depth_is_refused(bits):
    with pytest.raises(FrameError, match="bit depth"):
        to_grey8(ramp(1024), bits=bits)


def test_bool_frames_are_black_and_white():
    frame = np.zeros((4, 6), bool)
    frame[1:3, 2:5] = True
    np.testing.assert_array_equal(to_grey8(frame), frame.astype(np.uint8) * 255)


def test_colour_deep_frames_are_scaled_then_made_grey():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 4096, (16, 20, 3)).astype(np.uint16)
    bgr[0, 0, 0] = 4095
    scaled = expected(bgr, 12)
    np.testing.assert_array_equal(to_grey8(bgr), cv2.cvtColor(scaled, cv2.COLOR_BGR2GRAY))


def test_training_and_runtime_read_a_12_bit_png_alike(tmp_path):
    from usseg.runtime.sources import open_source
    from usseg.train.io import read_grey8

    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 4096, (48, 64)).astype(np.float32), (0, 0), 1.5).astype(np.uint16)
    frame[0, 0], frame[-1, -1] = 0, 4095
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    trained_on = read_grey8(tmp_path / "f.png")
    np.testing.assert_array_equal(trained_on, expected(frame, 12))
    source = open_source(str(tmp_path))
    served = next(iter(source.frames())).image
    assert served.dtype == np.uint16  # the runtime scales it in preprocess, by the same rule
    np.testing.assert_array_equal(preprocess(served, get_recipe("realtime"), 32, 40)[0],
                                  preprocess(trained_on, get_recipe("realtime"), 32, 40)[0])


def test_a_dicom_file_declares_its_depth(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    from usseg.runtime.sources import InputError, read_dicom

    def write(path, frames, bits, signed=False):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UltrasoundMultiFrameImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.NumberOfFrames = "US", len(frames)
        ds.Rows, ds.Columns = frames.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
        ds.PixelData = frames.astype(np.int16 if signed else np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)

    # A 12-bit cine with a dark and a bright frame: both scaled by the declared 12 bits.
    cine = np.stack([ramp(1024)[:8], (ramp(1024)[:8] * 4)])
    write(tmp_path / "cine.dcm", cine, 12)
    frames = read_dicom(tmp_path / "cine.dcm")
    assert frames.dtype == np.uint8 and frames.shape == (2, 8, 64)
    np.testing.assert_array_equal(frames[0], expected(cine[0], 12))
    np.testing.assert_array_equal(frames[1], expected(cine[1], 12))
    write(tmp_path / "signed.dcm", np.stack([np.full((8, 8), -5), np.zeros((8, 8))]), 12, signed=True)
    with pytest.raises(InputError, match=r"signed.dcm: .*negative values"):
        read_dicom(tmp_path / "signed.dcm")
