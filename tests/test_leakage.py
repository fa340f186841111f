"""The leakage check: val / test frames that are near-copies of train frames are found (a frame
copied with a little noise and a 1-px shift), a clean split stays quiet, and prepare, the
fingerprint and usseg plan say so."""

import json

import cv2
import numpy as np
import pytest

from usseg.train.fingerprint import measure, read_fingerprint, write_fingerprint
from usseg.train.dataset import split_ids
from usseg.train.leakage import THRESHOLD, near_duplicate_groups, near_duplicates, thumbnail
from usseg.train.maskfolder import open_mask_folder, read_split, write_classes, write_item, write_split
from usseg.train.splits import presence_matrix, stratified_split
from usseg.train.phantom import phantom_frames
from usseg.train.plan_cli import plan_data
from usseg.train.prepare import main as prepare_main


def near_copy(image, seed, shift=(0, 1)):
    """The frame again, moved by a pixel and with speckle-like noise (sigma 8 grey levels)."""
    noisy = np.roll(image, shift, axis=(0, 1)).astype(np.float64)
    noisy += np.random.default_rng(seed).normal(0, 8, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def frames():
    return phantom_frames(14, seed=21, height=96, width=128)


def test_planted_near_copies_are_found_and_named(frames):
    train = {f"t{i}": f for i, f in enumerate(frames[:10])}
    evaluated = {"v0": near_copy(frames[3], 1), "v1": frames[10], "s0": frames[11], "s1": near_copy(frames[5], 2, (1, 0))}
    splits = {**{i: "train" for i in train}, "v0": "val", "v1": "val", "s0": "test", "s1": "test"}
    found = near_duplicates({i: thumbnail(f) for i, f in {**train, **evaluated}.items()}, splits)
    assert found.checked == {"val": 2, "test": 2} and found.near_duplicates == {"val": 1, "test": 1}
    assert [(e["split"], e["id"], e["train_id"]) for e in found.examples] in (
        [("val", "v0", "t3"), ("test", "s1", "t5")], [("test", "s1", "t5"), ("val", "v0", "t3")])
    assert all(e["similarity"] >= THRESHOLD for e in found.examples)
    line = found.warning()
    assert "1 of 2 val, 1 of 2 test frames" in line and f">= {THRESHOLD}" in line and "--group-pattern" in line


def test_a_clean_split_stays_quiet(frames):
    splits = {f"f{i}": ("train" if i < 10 else "val" if i < 12 else "test") for i in range(len(frames))}
    found = near_duplicates({f"f{i}": thumbnail(f) for i, f in enumerate(frames)}, splits)
    assert found.found == 0 and found.examples == [] and found.warning() is None
    assert found.checked == {"val": 2, "test": 2}


def test_a_flat_frame_matches_nothing():
    flat = np.full((40, 50), 90, np.uint8)
    found = near_duplicates({"a": thumbnail(flat), "b": thumbnail(flat)}, {"a": "train", "b": "test"})
    assert found.found == 0


def seed_set(root, images):
    (root / "images").mkdir(parents=True)
    for key, image in images.items():
        cv2.imwrite(str(root / "images" / f"{key}.png"), image)
    (root / "annotations.json").write_text(json.dumps({k: [["MID", "line", [[60, 5], [62, 90]]]] for k in images}))
    return ["--annotations", str(root / "annotations.json"), "--images", str(root / "images")]


def test_prepare_warns_about_near_copies_across_the_split(tmp_path, frames, capsys, caplog):
    """A sweep's frames (one frame and ten near-copies) among independent ones: wherever the split
    puts them, copies on the val / test side are reported with the train frame they copy."""
    sweep = {f"sweep{i:02d}": near_copy(frames[0], i) for i in range(11)}
    others = {f"other{i:02d}": f for i, f in enumerate(frames[1:])}
    source = seed_set(tmp_path / "src", {**sweep, **others})
    assert prepare_main([*source, "--out", str(tmp_path / "out")]) == 0
    splits = read_split(tmp_path / "out" / "split.csv")
    on_eval = [k for k in sweep if splits[k] != "train"]
    assert on_eval and any(splits[k] == "train" for k in sweep)
    out = capsys.readouterr().out
    assert f"leakage check: {len(on_eval)} near-duplicates of train frames" in out
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warning.startswith("near-duplicates of train frames:") and on_eval[0] in warning
    # grouping the sweep keeps it on one side, and the check goes quiet
    caplog.clear()
    assert prepare_main([*source, "--out", str(tmp_path / "grouped"), "--group-pattern", r"^(sweep|other\d+)"]) == 0
    assert "leakage check: 0 near-duplicates" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_fingerprint_and_plan_report_near_copies(tmp_path, frames, caplog):
    ids = [f"f{i}" for i in range(len(frames))]
    images = dict(zip(ids, frames))
    images["f13"] = near_copy(frames[2], 7)  # a test frame that copies train frame f2
    for item_id, image in images.items():
        write_item(tmp_path, item_id, image, np.zeros(image.shape, np.uint8))
    write_classes(tmp_path, ("background", "thing"))
    write_split(tmp_path / "split.csv", {i: ("train" if n < 10 else "val" if n < 12 else "test") for n, i in enumerate(ids)})
    fp = measure(open_mask_folder(tmp_path))
    assert fp.leakage["near_duplicates"] == {"val": 0, "test": 1} and fp.leakage["checked"] == {"val": 2, "test": 2}
    assert fp.leakage["examples"][0]["id"] == "f13" and fp.leakage["examples"][0]["train_id"] == "f2"
    assert fp.leakage["threshold"] == THRESHOLD and "thumbnails" in fp.leakage["method"]
    write_fingerprint(tmp_path / "fp.json", fp)
    assert read_fingerprint(tmp_path / "fp.json") == fp
    plan_data(tmp_path, "cpu")
    assert "near-duplicates of train frames: 1 of 2 test frames" in caplog.text and "f13 ~ train f2" in caplog.text


def reference_groups(thumbs, threshold=THRESHOLD):
    """Connected components by repeated merging over every pair: the plain reference."""
    ids, label = list(thumbs), {i: n for n, i in enumerate(thumbs)}
    changed = True
    while changed:
        changed = False
        for a in ids:
            for b in ids:
                if float(thumbs[a] @ thumbs[b]) >= threshold and label[a] != label[b]:
                    label[a] = label[b] = min(label[a], label[b])
                    changed = True
    return label


def test_near_duplicate_groups_join_chains_and_keep_the_rest_apart(frames):
    """a ~ a' ~ a'' share a group even where a and a'' alone would not reach the threshold; the
    same partition as the all-pairs reference."""
    thumbs = {f"f{i}": thumbnail(f) for i, f in enumerate(frames[:8])}
    thumbs["c1"] = thumbnail(near_copy(frames[1], 1))
    thumbs["c1b"] = thumbnail(near_copy(near_copy(frames[1], 2, (1, 0)), 3, (0, 1)))
    thumbs["c4"] = thumbnail(near_copy(frames[4], 4))
    groups = near_duplicate_groups(thumbs)
    assert groups["f1"] == groups["c1"] == groups["c1b"] and groups["f4"] == groups["c4"]
    assert len(set(groups.values())) == 8  # the eight independent frames, copies joined to theirs
    partition = lambda labels: sorted(sorted(i for i in labels if labels[i] == g) for g in set(labels.values()))
    assert partition(groups) == partition(reference_groups(thumbs))
    assert near_duplicate_groups({}) == {}


def sweep_folder(root, frames, copies):
    """A mask folder without a val split: independent frames, and ``copies`` near-copies of frames
    0..3 (a sweep's neighbours), each masked with its own class so that stratification has work."""
    images = {f"f{i:02d}": f for i, f in enumerate(frames)}
    for n in range(copies):
        images[f"f{n % 4:02d}copy{n}"] = near_copy(frames[n % 4], 10 + n)
    for item_id, image in images.items():
        mask = np.zeros(image.shape, np.uint8)
        mask[:8, :8] = 1 + int(item_id[1:3]) % 2
        write_item(root, item_id, image, mask)
    write_classes(root, ("background", "a", "b"))
    write_split(root / "split.csv", {i: "train" for i in images})
    return open_mask_folder(root)


def test_val_carved_from_train_keeps_near_copies_with_their_frame(tmp_path, frames):
    folder = sweep_folder(tmp_path, frames, copies=12)
    parts = split_ids(folder, 0.3)
    thumbs = {i: thumbnail(folder.load(i)[0]) for i in folder.ids("train")}
    groups = near_duplicate_groups(thumbs)
    assert parts["val"] and set(parts["train"]) | set(parts["val"]) == set(thumbs)
    assert not {groups[i] for i in parts["val"]} & {groups[i] for i in parts["train"]}
    splits = {**{i: "train" for i in parts["train"]}, **{i: "val" for i in parts["val"]}}
    assert near_duplicates(thumbs, splits).found == 0
    assert split_ids(folder, 0.3) == parts


def test_val_carve_without_near_copies_is_the_stratified_one(tmp_path, frames):
    folder = sweep_folder(tmp_path, frames, copies=0)
    ids = folder.ids("train")
    present = [set(np.unique(folder.load(i)[1]).tolist()) for i in ids]
    expected = stratified_split(ids, presence_matrix(present, 3), val=0.3, test=0.0, seed=42)
    parts = split_ids(folder, 0.3)
    assert parts["val"] == sorted(i for i in ids if expected[i] == "val")
