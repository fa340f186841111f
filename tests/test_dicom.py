import json

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from usseg.runtime import dicom
from usseg.runtime.imageio import ImageError
from usseg.runtime.infer import main as infer_main
from usseg.runtime.preprocess import to_grey8
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


# -- DICOM as ultrasound systems write it (usseg.runtime.dicom) --------------------------------------
def region(x0, y0, x1, y1, dx_cm, dy_cm, units=(3, 3), spatial_format=1) -> Dataset:
    """One item of the Sequence of Ultrasound Regions."""
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = spatial_format, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = dx_cm, dy_cm
    return item


def write_dicom(path, pixels: np.ndarray, *, photometric="MONOCHROME2", bits_stored=None, stored=None, **attrs):
    """A multi-frame US DICOM file. ``pixels``: [N, H, W] or [N, H, W, 3] as they are to be stored
    (``stored`` overrides the bytes written, for subsampled YBR); ``attrs``: further elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UltrasoundMultiFrameImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.NumberOfFrames = "US", len(pixels)
    ds.Rows, ds.Columns = pixels.shape[1:3]
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    allocated = pixels.dtype.itemsize * 8
    bits = bits_stored or allocated
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, Sequence(value) if key == "SequenceOfUltrasoundRegions" else value)
    ds.PixelData = (pixels if stored is None else stored).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def grey_cine(n=3, h=40, w=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def test_spacing_from_ultrasound_regions_in_cm_wins_over_pixel_spacing(tmp_path):
    path = write_dicom(tmp_path / "regions.dcm", grey_cine(),
                       SequenceOfUltrasoundRegions=[region(4, 6, 44, 38, 0.012, 0.012)], PixelSpacing=[0.5, 0.5])
    frames, info = dicom.read_dicom(path)
    assert frames.shape == (3, 40, 48) and info.spacing_source == "ultrasound-regions"
    assert info.spacing_mm == pytest.approx((0.12, 0.12))
    assert info.region == (4, 6, 44, 38) and info.skin_y == 6.0
    cal = dicom.calibration_for(None, path)
    assert (cal.spacing_mm, cal.spacing_source, cal.skin_y) == (pytest.approx(0.12), "ultrasound-regions", 6.0)
    # The user's spacing wins; the skin line stays the region's top.
    assert dicom.calibration_for(0.3, path) == dicom.Calibration(0.3, "user", 6.0)


def test_the_largest_2d_region_in_cm_is_used_and_others_are_skipped(tmp_path):
    regions = [region(0, 0, 48, 8, 0.05, 0.05, units=(4, 5)),          # a spectral strip: seconds / hertz
               region(0, 0, 20, 20, 0.02, 0.02),                         # a small 2D inset
               region(0, 10, 48, 40, -0.01, 0.01),                       # the main image; X runs right to left
               region(0, 0, 48, 40, 0.03, 0.03, spatial_format=2)]       # M-mode
    info = dicom.read_info(write_dicom(tmp_path / "multi.dcm", grey_cine(), SequenceOfUltrasoundRegions=regions))
    assert info.spacing_mm == pytest.approx((0.1, 0.1)) and info.region == (0, 10, 48, 40)


def test_pixel_spacing_is_the_fallback_and_bad_values_are_ignored_by_name(tmp_path, caplog):
    info = dicom.read_info(write_dicom(tmp_path / "ps.dcm", grey_cine(), PixelSpacing=[0.2, 0.2]))
    assert (info.spacing_mm, info.spacing_source, info.region) == ((0.2, 0.2), "pixel-spacing", None)
    bad = write_dicom(tmp_path / "bad.dcm", grey_cine(), PixelSpacing=[0.0, 0.2],
                      SequenceOfUltrasoundRegions=[region(0, 0, 48, 40, 0.0, 0.0)])
    info = dicom.read_info(bad)
    assert info.spacing_mm is None and info.spacing_source is None
    assert "Physical Delta" in caplog.text and "Pixel Spacing" in caplog.text and "bad.dcm" in caplog.text
    assert dicom.calibration_for(None, bad) == dicom.Calibration(None, "none", 0.0)


def test_anisotropic_file_spacing_is_not_used_and_said_so(tmp_path, caplog):
    path = write_dicom(tmp_path / "aniso.dcm", grey_cine(), PixelSpacing=[0.1, 0.2])
    assert dicom.calibration_for(None, path).spacing_source == "none"
    assert "differs between rows" in caplog.text
    # Within 1 %: one spacing, their mean.
    near = write_dicom(tmp_path / "near.dcm", grey_cine(), PixelSpacing=[0.1, 0.1005])
    assert dicom.calibration_for(None, near).spacing_mm == pytest.approx(0.10025)


@pytest.mark.parametrize("attrs, fps, source", [
    ({"FrameTime": 50.0}, 20.0, "frame-time"),
    ({"CineRate": 30}, 30.0, "cine-rate"),
    ({"FrameTime": 40.0, "CineRate": 30}, 25.0, "frame-time"),
    ({"RecommendedDisplayFrameRate": 15}, 15.0, "display-frame-rate"),
    ({"FrameTime": 0.0, "CineRate": 12}, 12.0, "cine-rate"),
    ({}, None, None),
])
def test_frame_rate_from_frame_time_then_cine_rate(tmp_path, attrs, fps, source):
    path = write_dicom(tmp_path / "rate.dcm", grey_cine(), **attrs)
    info = dicom.read_info(path)
    assert (info.fps, info.fps_source) == (pytest.approx(fps) if fps else None, source)
    from usseg.runtime.sources import open_source

    assert open_source(str(path)).fps == (pytest.approx(fps) if fps else None)
    assert open_source(str(path), fps=7.0).fps == 7.0   # the user's rate wins


def test_monochrome1_is_inverted(tmp_path):
    cine = grey_cine()
    frames, info = dicom.read_dicom(write_dicom(tmp_path / "m1.dcm", cine, photometric="MONOCHROME1"))
    assert info.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(frames, 255 - cine)
    deep = np.random.default_rng(1).integers(0, 4096, (2, 16, 24), dtype=np.uint16)
    frames, _ = dicom.read_dicom(write_dicom(tmp_path / "m1_12.dcm", deep, photometric="MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(frames, np.stack([to_grey8(4095 - f, 12) for f in deep]))


def test_twelve_bits_stored_masks_the_high_bits_and_scales_by_twelve(tmp_path):
    values = np.random.default_rng(2).integers(0, 4096, (2, 16, 24), dtype=np.uint16)
    values[0, 0, 0], values[1, 0, 0] = 4095, 0
    garbage = values | np.uint16(0xA000)          # overlay bits above Bits Stored
    frames, info = dicom.read_dicom(write_dicom(tmp_path / "b12.dcm", garbage, bits_stored=12))
    assert info.bits_stored == 12 and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, np.stack([to_grey8(f, 12) for f in values]))
    assert frames[0, 0, 0] == 255 and frames[1, 0, 0] == 0


def colour_cine() -> np.ndarray:
    """RGB frames whose colour is constant over each pair of columns (so 4:2:2 loses nothing)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(20, 236, (2, 8, 6, 3), dtype=np.uint8)
    return np.repeat(rgb, 2, axis=2)


def test_ybr_full_is_converted_to_bgr(tmp_path):
    rgb = colour_cine()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    frames, info = dicom.read_dicom(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    assert frames.shape == rgb.shape and info.photometric == "YBR_FULL"
    assert np.abs(frames.astype(int) - rgb[..., ::-1]).max() <= 2


def test_ybr_full_422_is_upsampled_and_converted_to_bgr(tmp_path):
    rgb = colour_cine()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    packed = np.empty(ybr.shape[:2] + (ybr.shape[2] // 2, 4), np.uint8)   # Y0 Y1 Cb Cr per pair of pixels
    packed[..., 0], packed[..., 1] = ybr[:, :, 0::2, 0], ybr[:, :, 1::2, 0]
    packed[..., 2], packed[..., 3] = ybr[:, :, 0::2, 1], ybr[:, :, 0::2, 2]
    frames, _ = dicom.read_dicom(write_dicom(tmp_path / "ybr422.dcm", ybr, photometric="YBR_FULL_422", stored=packed))
    assert frames.shape == rgb.shape
    assert np.abs(frames.astype(int) - rgb[..., ::-1]).max() <= 2


def test_rgb_stays_colour_in_bgr_order(tmp_path):
    rgb = colour_cine()
    frames, _ = dicom.read_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    np.testing.assert_array_equal(frames, rgb[..., ::-1])


def test_damaged_headers_are_named(tmp_path):
    path = write_dicom(tmp_path / "big.dcm", grey_cine(1), BitsStored=8)
    import pydicom

    ds = pydicom.dcmread(str(path))
    ds.BitsStored = 12                     # more bits stored than allocated
    ds.save_as(str(tmp_path / "bits.dcm"))
    with pytest.raises(ImageError, match=r"bits.dcm: BitsStored 12 is outside 1..8"):
        dicom.read_dicom(tmp_path / "bits.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ImageError, match=r"junk.dcm: not a readable DICOM file"):
        dicom.read_dicom(tmp_path / "junk.dcm")
    with pytest.raises(ImageError, match="missing.dcm: file not found"):
        dicom.read_info(tmp_path / "missing.dcm")


def test_predict_uses_and_names_the_files_spacing_and_fits_the_documented_schema(tiny_onnx, cine, tmp_path):
    import hashlib

    import jsonschema
    from results_schema import validate

    _, frames = cine
    regions = write_dicom(tmp_path / "regions.dcm", frames[:2], FrameTime=40.0,
                          SequenceOfUltrasoundRegions=[region(0, 8, 128, 96, 0.02, 0.02)])
    plain = tmp_path / "plain.png"
    import cv2

    cv2.imwrite(str(plain), frames[2])
    assert infer_main(["--model", str(tiny_onnx), str(regions), str(plain), "--out", str(tmp_path / "a"),
                       "--device", "cpu", "--quiet", "--no-progress"]) == 0
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    validate(doc)
    by_file = {(r["file"], r["frame"]): r for r in doc["frames"]}
    from_file = by_file[(str(regions), 0)]
    assert (from_file["spacing_mm"], from_file["spacing_source"]) == (pytest.approx(0.2), "ultrasound-regions")
    assert {m["unit"] for m in from_file["measurements"].values()} <= {"mm", "deg"}
    none = by_file[(str(plain), 0)]
    assert (none["spacing_mm"], none["spacing_source"]) == (None, "none")
    assert {m["unit"] for m in none["measurements"].values()} <= {"px", "deg"}
    prov = doc["provenance"]
    assert prov["sha256"] == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert prov["classes"] == doc["classes"] and prov["recipe"]["name"] == doc["recipe"]
    assert prov["provider"] == "CPUExecutionProvider" and prov["onnxruntime"] and prov["time"].endswith("+00:00")
    # The user's spacing wins over the file's, and says so.
    assert infer_main(["--model", str(tiny_onnx), str(regions), "--out", str(tmp_path / "b"), "--device", "cpu",
                       "--spacing", "0.35", "--quiet", "--no-progress"]) == 0
    doc = json.loads((tmp_path / "b" / "results.json").read_text())
    validate(doc)
    assert {(r["spacing_mm"], r["spacing_source"]) for r in doc["frames"]} == {(0.35, "user")}
    # The schema does refuse what it does not describe.
    doc["frames"][0]["spacing_source"] = "guessed"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)
