"""Grouped splits: every group (a patient, a sweep) on one side, stratified as far as groups
allow, deterministic for a seed; from a CSV file or from the file names."""

import json

import cv2
import numpy as np
import pytest

from usseg.train.maskfolder import read_split
from usseg.train.prepare import main as prepare_main
from usseg.train.splits import grouped_split, presence_matrix


def sweeps(n_groups=40, seed=0):
    """Frames in sweeps of 2 to 8; a quarter of the sweeps are off target (no structure at all)."""
    rng = np.random.default_rng(seed)
    ids, groups, present = [], [], []
    for g in range(n_groups):
        empty = g % 4 == 0
        for f in range(int(rng.integers(2, 9))):
            ids.append(f"p{g:02d}_f{f}")
            groups.append(f"p{g:02d}")
            present.append(set() if empty else {1} | ({2} if rng.random() < 0.5 else set()))
    return ids, groups, presence_matrix(present, 3)


def sides(splits, ids, groups):
    out = {}
    for item_id, group in zip(ids, groups):
        out.setdefault(group, set()).add(splits[item_id])
    return out


def test_no_group_lands_on_two_sides_and_the_parts_are_stratified():
    ids, groups, presence = sweeps()
    splits = grouped_split(ids, presence, groups, val=0.1, test=0.2, seed=3)
    assert set(splits) == set(ids)
    assert all(len(s) == 1 for s in sides(splits, ids, groups).values())
    per_side = {s: {g for i, g in zip(ids, groups) if splits[i] == s} for s in ("train", "val", "test")}
    share = {s: sum(v == s for v in splits.values()) / len(ids) for s in per_side}
    assert abs(share["val"] - 0.1) < 0.06 and abs(share["test"] - 0.2) < 0.08, share  # 2 and 4 of 20 folds
    assert all(len(per_side[s]) >= 2 for s in per_side)
    # as far as groups allow: off-target sweeps (a quarter of all) are in test and in train
    empty_share = {s: np.mean([presence[ids.index(i)][-1] for i in ids if splits[i] == s]) for s in per_side}
    overall = presence[:, -1].mean()
    assert abs(empty_share["test"] - overall) < 0.15 and abs(empty_share["train"] - overall) < 0.1


def test_grouped_split_is_deterministic_for_a_seed_whatever_the_order():
    ids, groups, presence = sweeps()
    first = grouped_split(ids, presence, groups, seed=5)
    order = np.random.default_rng(1).permutation(len(ids))
    shuffled = grouped_split([ids[i] for i in order], presence[order], [groups[i] for i in order], seed=5)
    assert shuffled == first
    assert grouped_split(ids, presence, groups, seed=6) != first


def test_too_few_groups_is_an_error_that_says_so():
    ids, groups, presence = sweeps(n_groups=2)
    with pytest.raises(ValueError, match="2 groups cannot give val and test a group each"):
        grouped_split(ids, presence, groups, val=0.1, test=0.2)
    splits = grouped_split(ids, presence, groups, val=0, test=0.2)
    assert len(set(splits.values())) == 2


def test_groups_with_fewer_frames_per_pattern_than_folds_still_split():
    """12 one-frame groups, each class-presence pattern on 6 frames (fewer than the 12 folds):
    StratifiedGroupKFold refuses such a data set, so the groups are dealt unstratified."""
    ids = [f"f{i:02d}" for i in range(12)] + ["f00b", "f01b"]
    groups = [f"g{i:02d}" for i in range(12)] + ["g00", "g01"]
    presence = presence_matrix([{1} if i % 2 else {2} for i in range(12)] + [{2}, {1}], 3)
    splits = grouped_split(ids, presence, groups, val=0.2, test=0.0, seed=1)
    assert all(len(s) == 1 for s in sides(splits, ids, groups).values())
    assert sum(v == "val" for v in splits.values()) >= 2 and set(splits.values()) == {"train", "val"}
    assert grouped_split(ids, presence, groups, val=0.2, test=0.0, seed=1) == splits


def seed_set(root, ids):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, item_id in enumerate(ids):
        cv2.imwrite(str(root / "images" / f"{item_id}.png"), rng.integers(0, 255, (24, 32), np.uint8))
    shapes = [["MID", "line", [[16, 1], [16, 22]]]]
    (root / "annotations.json").write_text(json.dumps({i: shapes if n % 3 else [] for n, i in enumerate(ids)}))
    return ["--annotations", str(root / "annotations.json"), "--images", str(root / "images")]


def test_prepare_keeps_each_group_from_the_file_names_on_one_side(tmp_path, capsys):
    ids, groups, _ = sweeps(n_groups=24)
    source = seed_set(tmp_path / "src", ids)
    assert prepare_main([*source, "--out", str(tmp_path / "out"), "--group-pattern", r"^(p\d+)_"]) == 0
    splits = read_split(tmp_path / "out" / "split.csv")
    assert all(len(s) == 1 for s in sides(splits, ids, groups).values())
    counted = {s: (len({g for i, g in zip(ids, groups) if splits[i] == s}), sum(v == s for v in splits.values()))
               for s in ("train", "val", "test")}
    line = next(x for x in capsys.readouterr().out.splitlines() if "groups (24)" in x)
    assert line.strip() == ("groups (24), each on one side: " + " | ".join(
        f"{s} {g} groups, {n} frames" for s, (g, n) in counted.items()))


def test_prepare_groups_from_a_csv_file_and_refuses_frames_without_one(tmp_path, caplog):
    ids, groups, _ = sweeps(n_groups=12)
    source = seed_set(tmp_path / "src", ids)
    table = tmp_path / "groups.csv"
    table.write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in zip(ids, groups)) + "stranger,p99\n")
    assert prepare_main([*source, "--out", str(tmp_path / "out"), "--groups", str(table), "--seed", "1"]) == 0
    splits = read_split(tmp_path / "out" / "split.csv")
    assert all(len(s) == 1 for s in sides(splits, ids, groups).values())
    # --masks-dir re-splits by the same groups
    assert prepare_main(["--masks-dir", str(tmp_path / "out"), "--groups", str(table), "--seed", "2"]) == 0
    assert all(len(s) == 1 for s in sides(read_split(tmp_path / "out" / "split.csv"), ids, groups).values())
    table.write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in list(zip(ids, groups))[2:]))
    assert prepare_main([*source, "--out", str(tmp_path / "again"), "--groups", str(table)]) == 2
    assert f"{table}: no group for 2 frame(s): ['{ids[0]}', '{ids[1]}']; every frame needs one" in caplog.text
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("options, words", [
    (["--group-pattern", "p(\\d+"], "--group-pattern 'p(\\\\d+': not a regular expression"),
    (["--group-pattern", "^q"], "no group for"),
    (["--groups", "missing.csv"], "--groups missing.csv: file not found"),
    (["--group-pattern", "^(p0)"], "1 groups cannot give val and test a group each"),
])
def test_group_options_errors_are_one_line(tmp_path, capsys, monkeypatch, options, words):
    ids, _, _ = sweeps(n_groups=4)
    source = seed_set(tmp_path / "src", ids[:9])
    monkeypatch.chdir(tmp_path)
    assert prepare_main([*source, "--out", str(tmp_path / "out"), *options]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
