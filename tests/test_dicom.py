import json

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from usseg.runtime.infer import main as infer_main
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.sources import read_dicom


def write_cine(path, frames: np.ndarray) -> None:
    """A minimal multi-frame ultrasound DICOM (8-bit grey) the way a scanner exports a cine."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.astype(np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def cine(tmp_path_factory):
    from usseg.train.phantom import PhantomConfig, generate_cine

    frames = np.stack([img for img, _ in generate_cine(PhantomConfig(height=96, width=128), seed=2, n_frames=6)])
    path = tmp_path_factory.mktemp("dicom") / "sweep.dcm"
    write_cine(path, frames)
    return path, frames


def test_dicom_cine_reads_back_every_frame(cine):
    path, frames = cine
    assert np.array_equal(read_dicom(path), frames)


def test_stream_and_infer_take_a_dicom_cine(tiny_onnx, cine, tmp_path):
    path, frames = cine
    seg = Segmenter(tiny_onnx, device="cpu")
    items = list(seg.stream(str(path), policy="all"))
    assert [i.index for i in items] == list(range(len(frames)))
    for item, frame in zip(items, frames):
        assert np.array_equal(item.result.labels, seg(frame).labels)
    assert infer_main(["--model", str(tiny_onnx), str(path), "--out", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [r["frame"] for r in doc["frames"]] == list(range(len(frames)))
    assert (tmp_path / "sweep_0005_overlay.png").is_file()
