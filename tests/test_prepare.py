import csv
import json

import cv2
import numpy as np
import pytest
from conftest import USGRA

from usseg.train.io import DataError
from usseg.train.maskfolder import open_mask_folder
from usseg.train.prepare import main as prepare_main
from usseg.train.splits import presence_matrix, stratified_split


def make_seed_set(root, n=40, seed=0):
    """n small frames; presence patterns vary so that stratification has something to balance."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    ann = {}
    for i in range(n):
        key = f"f{i:03d}"
        cv2.imwrite(str(root / "images" / f"{key}.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
        shapes = []
        if i % 5:
            shapes.append(["MID", "line", [[32, 2], [33, 45]]])
            if i % 3:
                shapes.append(["VTB", "rect", [[10, 35], [54, 44]]])
            if i % 2:
                shapes.append(["EPI", "line", [[20, 20], [44, 21]]])
        ann[key] = shapes
    (root / "annotations.json").write_text(json.dumps(ann))
    return root


def read_split(path):
    with open(path) as f:
        return {r["id"]: r["split"] for r in csv.DictReader(f)}


def test_prepare_writes_three_disjoint_stratified_parts(tmp_path, capsys):
    src = make_seed_set(tmp_path / "src")
    out = tmp_path / "out"
    rc = prepare_main(["--annotations", str(src / "annotations.json"), "--images", str(src / "images"),
                       "--out", str(out), "--val", "0.1", "--test", "0.2", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "MID" in printed and "test" in printed
    split = read_split(out / "split.csv")
    assert len(split) == 40
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 4, "test": 8}
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "MID", "2": "VTB", "3": "EPI"}
    folder = open_mask_folder(out)
    assert sorted(folder.ids()) == sorted(split)
    # Stratified: frames without MID (1 in 5) land in every part in proportion.
    empty = {k for k in split if int(k[1:]) % 5 == 0}
    assert sum(split[k] == "test" for k in empty) == 2 and sum(split[k] == "val" for k in empty) == 1
    # Deterministic for a seed, different for another seed.
    out2 = tmp_path / "out2"
    prepare_main(["--annotations", str(src / "annotations.json"), "--images", str(src / "images"),
                  "--out", str(out2), "--seed", "3"])
    assert read_split(out2 / "split.csv") == split
    out3 = tmp_path / "out3"
    prepare_main(["--annotations", str(src / "annotations.json"), "--images", str(src / "images"),
                  "--out", str(out3), "--seed", "4"])
    assert read_split(out3 / "split.csv") != split


def test_prepare_skips_bad_entries_or_stops_when_strict(tmp_path):
    src = make_seed_set(tmp_path / "src", n=10)
    ann = json.loads((src / "annotations.json").read_text())
    ann["f001"] = [["MID", "line", [[1, 1], [999, 1]]]]
    (src / "annotations.json").write_text(json.dumps(ann))
    args = ["--annotations", str(src / "annotations.json"), "--images", str(src / "images")]
    # strict: stops, and leaves no output folder (nor a half-written temp folder) behind
    assert prepare_main(args + ["--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # default: reports, skips, goes on, exit code says something was skipped
    assert prepare_main(args + ["--out", str(tmp_path / "lenient")]) == 1
    assert "f001" not in read_split(tmp_path / "lenient" / "split.csv")
    assert len(read_split(tmp_path / "lenient" / "split.csv")) == 9


def test_prepare_refuses_to_overwrite_without_flag(tmp_path):
    src = make_seed_set(tmp_path / "src", n=10)
    args = ["--annotations", str(src / "annotations.json"), "--images", str(src / "images"), "--out", str(tmp_path / "o")]
    assert prepare_main(args) == 0
    assert prepare_main(args) == 2
    assert prepare_main(args + ["--overwrite"]) == 0


def test_resplit_existing_mask_folder(tmp_path):
    src = make_seed_set(tmp_path / "src", n=20)
    out = tmp_path / "out"
    prepare_main(["--annotations", str(src / "annotations.json"), "--images", str(src / "images"), "--out", str(out)])
    before = read_split(out / "split.csv")
    assert prepare_main(["--masks-dir", str(out), "--val", "0", "--test", "0.5", "--seed", "1"]) == 0
    after = read_split(out / "split.csv")
    assert set(after) == set(before)
    assert sum(v == "test" for v in after.values()) == 10 and "val" not in after.values()


def test_sample_dataset_prepares_to_its_own_canvas(tmp_path, seed_sample):
    out = tmp_path / "p"
    assert prepare_main(["--annotations", str(seed_sample.annotations), "--images", str(seed_sample.images),
                         "--out", str(out)]) == 0
    image, mask = open_mask_folder(out).load(seed_sample.key)
    assert image.shape == mask.shape == seed_sample.size == (443, 625)
    assert set(np.unique(mask)) == {0, 1, 2, 3}


def test_usgra_seg_loads_through_the_mask_folder_reader():
    """The real data set's own mask folder (four of its frames, shipped in tests/data)."""
    folder = open_mask_folder(USGRA)
    assert folder.classes == ("background", "nerve", "vessel")
    assert folder.ids("train") == ["0000", "0060", "0120"] and folder.ids("test") == ["0180"]
    for item_id, size in (("0000", (512, 512)), ("0180", (512, 534))):
        image, mask = folder.load(item_id)
        assert image.dtype == np.uint8 and image.shape == mask.shape == size
        assert set(np.unique(mask)) <= {0, 1, 2} and 1 in mask


def test_mask_folder_errors_name_the_file(tmp_path):
    src = make_seed_set(tmp_path / "src", n=10)
    out = tmp_path / "out"
    prepare_main(["--annotations", str(src / "annotations.json"), "--images", str(src / "images"), "--out", str(out)])
    cv2.imwrite(str(out / "masks" / "f002.png"), np.full((48, 64), 9, np.uint8))
    with pytest.raises(DataError, match=r"f002.png: class index 9"):
        open_mask_folder(out).load("f002")
    (out / "images" / "f003.png").unlink()
    with pytest.raises(DataError, match=r"f003.png: listed in split.csv"):
        open_mask_folder(out)
    (out / "classes.json").write_text("{bad")
    with pytest.raises(DataError, match="classes.json: malformed JSON"):
        open_mask_folder(out)


def test_split_fractions_are_checked():
    with pytest.raises(ValueError, match="--val"):
        stratified_split(["a", "b"], presence_matrix([{0}, {1}], 2), val=0.6, test=0.5)
