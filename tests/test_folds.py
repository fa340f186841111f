"""Cross-validation: folds of train+val (disjoint, covering, stratified, groups kept together) and
`usseg train --folds K` writing K normal run folders and the mean and spread of their val Dice."""

import json

import numpy as np
import pytest
from test_train import make_mask_folder

from usseg.runtime.errors import UsageError
from usseg.train.folds import fold_split, spread
from usseg.train.maskfolder import open_mask_folder
from usseg.train.train_cli import main

IDS = [f"f{i:02d}" for i in range(20)]
# presence of two classes: 8 frames with both, 6 with the first only, 6 with none
PRESENCE = np.array([[1, 1, 0]] * 8 + [[1, 0, 0]] * 6 + [[0, 0, 1]] * 6)


def test_folds_are_disjoint_cover_everything_and_are_stratified():
    folds = fold_split(IDS, PRESENCE, 4, seed=1)
    assert sorted(i for fold in folds for i in fold) == IDS             # every frame in exactly one fold
    assert [len(f) for f in folds] == [5, 5, 5, 5]
    both = {IDS[i] for i in range(8)}
    assert all(len(both & set(fold)) == 2 for fold in folds)          # 8 frames with both classes: 2 a fold
    assert fold_split(IDS, PRESENCE, 4, seed=1) == folds               # deterministic for a seed
    assert fold_split(IDS, PRESENCE, 4, seed=2) != folds
    assert fold_split(list(reversed(IDS)), PRESENCE[::-1], 4, seed=1) == folds  # the order given does not matter


def test_groups_stay_in_one_fold():
    groups = [f"patient{i // 3}" for i in range(20)]                   # 7 groups of up to 3 frames
    folds = fold_split(IDS, PRESENCE, 3, seed=0, groups=groups)
    assert sorted(i for fold in folds for i in fold) == IDS
    for fold in folds:
        members = {groups[IDS.index(i)] for i in fold}
        others = {groups[IDS.index(i)] for other in folds if other is not fold for i in other}
        assert not members & others                                    # no group on two sides


@pytest.mark.parametrize("k, groups, message", [
    (1, None, "needs at least 2 folds"),                                # one fold is no cross-validation
    (21, None, "only 20 frames"),                                       # more folds than frames
    (3, ["a", "b"] * 10, "only 2 groups"),                              # more folds than groups
])
def test_fold_counts_that_cannot_work_are_refused(k, groups, message):
    with pytest.raises(UsageError, match=message):
        fold_split(IDS, PRESENCE, k, groups=groups)


def test_spread():
    assert spread([0.6, 0.7, 0.8]) == {"mean": 0.7, "std": 0.1, "min": 0.6, "max": 0.8}
    assert spread([None, 0.5])["std"] == 0.0 and spread([None])["mean"] is None


def test_cli_folds_write_k_runs_and_their_spread(tmp_path):
    data = make_mask_folder(tmp_path / "data", n=12, height=32, width=48, test=2)
    run = tmp_path / "cv"
    args = ["--data", str(data), "--out", str(run), "--folds", "2", "--profile", "tiny", "--epochs", "2",
            "--no-progress"]
    assert main(args) == 0
    report = json.loads((run / "folds.json").read_text())
    folder = open_mask_folder(data)
    train_val = sorted(folder.ids("train") + folder.ids("val"))
    vals = [set(r["val_ids"]) for r in report["runs"]]
    assert not vals[0] & vals[1] and sorted(vals[0] | vals[1]) == train_val   # disjoint, all of train+val
    assert not (vals[0] | vals[1]) & set(folder.ids("test"))                  # the test split never used
    for i, r in enumerate(report["runs"]):
        fold = run / f"fold_{i}"
        assert {"best.pt", "last.pt", "config.json", "metrics.json"} <= {p.name for p in fold.iterdir()}
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["final"]["frames"] == {"train": len(train_val) - len(vals[i]), "val": len(vals[i])}
        assert r["best_mean_val_dice"] == metrics["final"]["best_mean_val_dice"]
    scores = [r["best_mean_val_dice"] for r in report["runs"]]
    assert report["mean_val_dice"]["mean"] == pytest.approx(np.mean(scores), abs=1e-4)
    assert report["mean_val_dice"]["std"] == pytest.approx(np.std(scores, ddof=1), abs=1e-4)
    assert set(report["per_class"]) == {"MID", "VTB", "EPI"}
    # a second run into the same folder is refused; --resume finds every fold done and trains nothing
    assert main(args) == 2
    stamp = (run / "fold_1" / "last.pt").stat().st_mtime_ns
    assert main(args[:-3] + ["--resume", "--no-progress"]) == 0
    assert (run / "fold_1" / "last.pt").stat().st_mtime_ns == stamp


def test_cli_folds_keep_groups_together(tmp_path):
    data = make_mask_folder(tmp_path / "data", n=12, height=32, width=48, test=2)
    table = tmp_path / "groups.csv"
    groups = {f"f{i:02d}": f"sweep{i // 2}" for i in range(12)}  # five sweeps of two frames in train+val
    table.write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in groups.items()))
    run = tmp_path / "cv"
    common = ["--data", str(data), "--profile", "tiny", "--epochs", "1", "--no-progress"]
    assert main(common + ["--out", str(run), "--folds", "2", "--groups", str(table)]) == 0
    report = json.loads((run / "folds.json").read_text())
    assert report["groups"] == 5
    sides = [{groups[i] for i in r["val_ids"]} for r in report["runs"]]
    assert not sides[0] & sides[1] and len(sides[0] | sides[1]) == 5   # every sweep in one fold
    # groups shape folds only: a plain run is grouped by usseg prepare
    assert main(common + ["--out", str(tmp_path / "r2"), "--groups", str(table)]) == 2
