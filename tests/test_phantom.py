import json

import cv2
import numpy as np
import pytest

from usseg.train.phantom import PhantomConfig, contact_sheet, generate_cine, generate_frame, write_dataset
from usseg.train.phantom_cli import main

SMALL = PhantomConfig(height=120, width=160)
MEDIUM = PhantomConfig(height=240, width=320)
KINDS = {"MID": "line", "VTB": "rect", "EPI": "line"}
ORDER = ["MID", "VTB", "EPI"]


def check_shapes(shapes, height, width):
    """Seed format: [label, kind, [[x, y], [x, y]]], integer points inside the image, MID-VTB-EPI order."""
    assert isinstance(shapes, list)
    labels = [s[0] for s in shapes]
    assert labels == [label for label in ORDER if label in labels], labels
    assert not shapes or labels[0] == "MID", "VTB or EPI without MID"
    for label, kind, points in shapes:
        assert KINDS[label] == kind
        assert len(points) == 2
        for point in points:
            assert len(point) == 2 and all(type(v) is int for v in point), point
            x, y = point
            assert 0 <= x < width and 0 <= y < height, (label, point)


def line_mask(shape, p, q, thickness):
    mask = np.zeros(shape, np.uint8)
    cv2.line(mask, tuple(p), tuple(q), 1, thickness)
    return mask > 0


def test_same_seed_same_bytes_and_other_seed_differs():
    a, shapes_a = generate_frame(SMALL, seed=3, index=4)
    b, shapes_b = generate_frame(SMALL, seed=3, index=4)
    assert a.dtype == np.uint8 and a.shape == (120, 160)
    assert a.tobytes() == b.tobytes() and shapes_a == shapes_b
    c, _ = generate_frame(SMALL, seed=4, index=4)
    d, _ = generate_frame(SMALL, seed=3, index=5)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


@pytest.mark.parametrize("height,width", [(64, 64), (100, 300), (443, 625)])
def test_any_size_gives_valid_frames(height, width):
    cfg = PhantomConfig(height=height, width=width)
    for index in range(2):
        image, shapes = generate_frame(cfg, seed=0, index=index)
        assert image.shape == (height, width) and image.dtype == np.uint8
        assert image.std() > 5  # not blank
        check_shapes(shapes, height, width)


def test_dataset_is_seed_format(tmp_path):
    annotations = write_dataset(tmp_path / "ds", count=6, seed=2, cfg=SMALL)
    on_disk = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert on_disk == annotations
    pngs = sorted((tmp_path / "ds" / "images").iterdir())
    assert {p.stem for p in pngs} == set(on_disk) and all(p.suffix == ".png" for p in pngs)
    assert sorted(on_disk) == [f"phantom_{i:04d}" for i in range(6)]
    for key, shapes in on_disk.items():
        image = cv2.imread(str(tmp_path / "ds" / "images" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (120, 160)  # single-channel 8-bit grey
        assert np.array_equal(image, generate_frame(SMALL, 2, int(key.split("_")[1]))[0])
        check_shapes(shapes, 120, 160)


def test_missing_rate_is_roughly_honoured():
    results = [generate_frame(SMALL, seed=11, index=i)[1] for i in range(60)]
    for shapes in results:
        check_shapes(shapes, 120, 160)
    empty = sum(1 for s in results if not s)
    full = sum(1 for s in results if [x[0] for x in s] == ORDER)
    assert 3 <= empty <= 18, empty  # 9 expected at 0.15
    assert full >= 30
    none_missing = PhantomConfig(height=120, width=160, missing_rate=0.0)
    assert all(generate_frame(none_missing, 11, i)[1] for i in range(8))
    all_missing = PhantomConfig(height=120, width=160, missing_rate=1.0)
    assert not any(generate_frame(all_missing, 11, i)[1] for i in range(4))


def test_partial_frames_occur():
    cfg = PhantomConfig(height=120, width=160, missing_rate=0.0, spinous_rate=0.0,
                        epi_missing_rate=0.5, vtb_missing_rate=0.5)
    kinds = {tuple(s[0] for s in generate_frame(cfg, 5, i)[1]) for i in range(16)}
    assert ("MID", "VTB") in kinds and ("MID", "EPI") in kinds


def test_structures_are_in_the_image():
    """The annotations sit on what was drawn: bright EPI line and VTB band, shadow below VTB,
    dark midline stripe between brighter muscle."""
    cfg = PhantomConfig(height=240, width=320, missing_rate=0.0, spinous_rate=0.0,
                        epi_missing_rate=0.0, vtb_missing_rate=0.0)
    checked = 0
    for index in range(6):
        image, shapes = generate_frame(cfg, seed=21, index=index)
        found = {label: points for label, _, points in shapes}
        assert set(found) == set(ORDER)
        img = image.astype(np.float64)
        overall = img.mean()
        epi = img[line_mask(img.shape, *found["EPI"], 10)].mean()
        epi_core = img[line_mask(img.shape, *found["EPI"], 3)].mean()
        (x0, y0), (x1, y1) = found["VTB"]
        band = img[y0:y1 + 1, x0:x1 + 1].mean()
        height = y1 - y0 + 1
        below = img[y1 + 3:y1 + 3 + height, x0:x1 + 1]
        assert epi > 1.8 * overall and epi_core > 2.5 * overall, (index, epi, epi_core, overall)
        assert band > 1.4 * overall, (index, band, overall)
        if below.size:
            assert below.mean() < 0.3 * band, (index, below.mean(), band)
        # the midline above the posterior complex is darker than muscle a little to either side
        (mx0, my0), (mx1, my1) = found["MID"]
        y_top, y_bottom = my0 + 10, found["EPI"][0][1] - 8
        x_at = lambda y: int(round(mx0 + (mx1 - mx0) * (y - my0) / (my1 - my0)))  # noqa: E731
        mid = img[line_mask(img.shape, (x_at(y_top), y_top), (x_at(y_bottom), y_bottom), 3)].mean()
        flanks = [img[line_mask(img.shape, (x_at(y_top) + d, y_top), (x_at(y_bottom) + d, y_bottom), 3)].mean()
                  for d in (-16, 16)]
        assert mid < 0.6 * np.mean(flanks), (index, mid, flanks)
        checked += 1
    assert checked == 6


def test_off_midline_frames_show_no_midline_stripe():
    cfg = PhantomConfig(height=120, width=160, missing_rate=1.0)
    image, shapes = generate_frame(cfg, seed=1, index=0)
    assert shapes == [] and image.std() > 5


def test_cine_sweeps_across_the_midline():
    frames = generate_cine(SMALL, seed=2, n_frames=9)
    assert len(frames) == 9
    present = [bool(shapes) for _, shapes in frames]
    assert not present[0] and not present[-1] and present[4], present
    for image, shapes in frames:
        check_shapes(shapes, 120, 160)
    a, b = frames[3][0].astype(np.float64), frames[4][0].astype(np.float64)
    assert not np.array_equal(a, b)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.3  # the same anatomy, partly decorrelated speckle
    again = generate_cine(SMALL, seed=2, n_frames=9)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(frames, again))


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        PhantomConfig(missing_rate=1.5)
    with pytest.raises(ValueError):
        PhantomConfig(height=10)


def test_cli_writes_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["--out", str(out), "--count", "3", "--seed", "5", "--height", "120", "--width", "160",
                 "--missing-rate", "0.2"]) == 0
    annotations = json.loads((out / "annotations.json").read_text())
    assert len(annotations) == 3
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == sorted(annotations)
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and p.suffix not in (".png", ".json")) == []
    assert "wrote 3 frames" in capsys.readouterr().out
    expected = write_dataset(tmp_path / "direct", 3, 5, PhantomConfig(height=120, width=160, missing_rate=0.2))
    assert annotations == expected


def test_cli_needs_something_to_do(caplog):
    assert main(["--count", "3"]) == 2
    assert "nothing to do: give --out and/or --contact-sheet" in caplog.text


def test_contact_sheet(tmp_path):
    path = contact_sheet(tmp_path / "sheet.png", SMALL, seed=0, cols=3, rows=2, tile_width=160)
    sheet = cv2.imread(str(path))
    assert sheet.shape == (2 * 120, 3 * 160, 3)
