"""One image reader for training and the runtime: cv2's channel order, errors that name the file."""

import cv2
import numpy as np
import pytest

from usseg.runtime import imageio
from usseg.runtime.preprocess import to_grey8


@pytest.fixture
def colour_png(tmp_path):
    bgr = np.zeros((12, 16, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 200, 60, 10  # blue-ish in BGR
    path = tmp_path / "c.png"
    cv2.imwrite(str(path), bgr)
    return path, bgr


def test_colour_images_come_back_bgr_everywhere(colour_png):
    from usseg.runtime.sources import read_image as runtime_read
    from usseg.train.io import read_grey8
    from usseg.train.io import read_image as train_read

    path, bgr = colour_png
    for read in (imageio.read_image, runtime_read, train_read):
        np.testing.assert_array_equal(read(path), bgr)
    np.testing.assert_array_equal(read_grey8(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(read_grey8(path), to_grey8(imageio.read_image(path)))


def test_alpha_and_16_bit_are_kept_as_stored(tmp_path):
    bgra = np.dstack([np.full((6, 8), v, np.uint16) * 257 for v in (30, 90, 150, 255)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    back = imageio.read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16 and back.shape == (6, 8, 4)
    np.testing.assert_array_equal(back, bgra)


@pytest.mark.parametrize("content,words", [
    (None, "image file not found"),
    (b"", "not a readable image"),
    (b"this is not a png", "not a readable image"),
])
def test_unreadable_files_are_named(tmp_path, content, words):
    from usseg.runtime.sources import InputError
    from usseg.runtime.sources import read_image as runtime_read
    from usseg.train.io import DataError
    from usseg.train.io import read_image as train_read

    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    for read, error in ((imageio.read_image, imageio.ImageError), (runtime_read, InputError), (train_read, DataError)):
        with pytest.raises(error, match=f"bad.png: {words}"):
            read(path)


def test_one_suffix_list():
    from usseg.runtime import sources
    from usseg.train import io

    assert sources.IMAGE_SUFFIXES is imageio.IMAGE_SUFFIXES is io.IMAGE_SUFFIXES
    assert ".png" in imageio.IMAGE_SUFFIXES and ".dcm" in imageio.DICOM_SUFFIXES
