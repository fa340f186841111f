"""usseg train refuses what it cannot use before it loads any frame or runs any epoch, shares its
run folder with no other run, and ends a full disk or a SIGTERM with one line saying how to resume."""

import errno
import json
import subprocess
import sys

import pytest
import torch
from boundary_support import no_traceback, tree_digest
from hostile_support import lock_held, terminated
from test_train import make_mask_folder

from usseg.runtime import fileio
from usseg.train import checkpoint, loop
from usseg.train.checkpoint import load_checkpoint
from usseg.train.train_cli import main

TINY = ["--profile", "tiny", "--no-progress", "--device", "cpu"]


@pytest.fixture
def data(tmp_path):
    return make_mask_folder(tmp_path / "data", n=8, height=32, width=40, test=2)


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Fails the test if training loads a frame."""
    def refuse(*args, **kwargs):
        raise AssertionError("frames were loaded before the check")

    monkeypatch.setattr(loop, "load_frames", refuse)


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("where, words", [
    ("data", "is the --data folder"),
    ("data/run", "is inside the --data folder"),
    ("data/masks", "is inside the --data folder"),
])
def test_out_in_the_data_folder_is_refused(data, nothing_loaded, caplog, where, words):
    before = tree_digest(data)
    out = data.parent / where
    assert main(["--data", str(data), "--out", str(out), *TINY]) == 2
    assert errors(caplog) == [f"--out {out}: {words} {data}; the run's files would mix with the data set: "
                              f"give a folder outside it"]
    assert tree_digest(data) == before


def test_out_that_is_a_file_is_refused_before_loading(data, nothing_loaded, caplog):
    out = data.parent / "run"
    out.write_text("notes")
    assert main(["--data", str(data), "--out", str(out), *TINY]) == 2
    assert errors(caplog) == [f"--out {out}: exists and is not a folder"] and out.read_text() == "notes"


@pytest.mark.parametrize("classes, words", [
    ({"0": "background", "1": "MID", "2": "bad/name"}, "'classes[2]'"),
    ({"0": "background", "1": "MID", "2": "MID"}, "duplicate names"),
    ({str(i): f"c{i}" for i in range(300)}, "300 names; need 2 to 255"),
])
def test_classes_a_model_cannot_carry_are_refused_naming_the_file(data, nothing_loaded, caplog, classes, words):
    (data / "classes.json").write_text(json.dumps(classes))
    out = data.parent / "run"
    assert main(["--data", str(data), "--out", str(out), *TINY]) == 2
    [message] = errors(caplog)
    assert message.startswith(f"{data / 'classes.json'}: ") and words in message
    assert not out.exists()


def test_all_empty_training_masks_are_refused_up_front(data, nothing_loaded, caplog):
    import cv2
    import numpy as np

    for mask in (data / "masks").iterdir():
        cv2.imwrite(str(mask), np.zeros((32, 40), np.uint8))
    assert main(["--data", str(data), "--out", str(data.parent / "run"), *TINY]) == 2
    assert errors(caplog) == [f"{data / 'masks'}: all 6 training masks are empty (background only): there is "
                              f"nothing to learn; check the annotations, or the class indices the masks use"]


def test_next_hint_only_when_best_pt_exists(data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(loop, "mean_dice", lambda dice: float("nan"))  # no validation gives a mean: no best.pt
    run = tmp_path / "run"
    caplog.set_level("INFO")
    assert main(["--data", str(data), "--out", str(run), *TINY, "--epochs", "1"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not (run / "best.pt").exists() and not [m for m in messages if m.startswith("next:")]
    assert any(m.startswith("no best.pt: no validation gave a mean val Dice") for m in messages)


def full_disk_from_the_second_epoch(monkeypatch):
    """Checkpoint writes fail with ENOSPC once the second epoch's state is saved."""
    real_save, real_write, full = torch.save, fileio.Path.write_bytes, []

    def save(state, target):
        if state["epoch"] >= 1:
            full.append(True)
        real_save(state, target)

    def write_bytes(path, data):
        if full and path.name.startswith((".best.pt", ".last.pt")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    monkeypatch.setattr(fileio.Path, "write_bytes", write_bytes)


def test_a_full_disk_names_the_file_and_the_resume_command(data, tmp_path, monkeypatch, caplog):
    full_disk_from_the_second_epoch(monkeypatch)
    run = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(run), *TINY, "--epochs", "3"]) == 1
    [message] = errors(caplog)
    failed = "best.pt" if "best.pt" in message.split(":")[0] else "last.pt"
    assert message == (f"{run / failed}: cannot write the checkpoint (No space left on device); {run / 'last.pt'} "
                       f"holds epoch 1: resume with  usseg train --data {data} --out {run} --resume")
    assert load_checkpoint(run / "last.pt")["epoch"] == 0                       # nothing half-written
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporaries, no lock


def test_a_really_full_file_system_ends_training_in_one_line(data, tmp_path):
    """On a 256 KiB tmpfs (root only): torch.save itself would fail there with a RuntimeError."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = small / "run"
        done = subprocess.run([sys.executable, "-m", "usseg.runtime.cli", "train", "--data", str(data), "--out",
                               str(run), *TINY, "--epochs", "400"], capture_output=True, text=True, timeout=600,
                              check=False)
        assert done.returncode == 1 and no_traceback(done.stderr), done.stderr
        last_line = done.stderr.strip().splitlines()[-1]
        assert "(No space left on device); " in last_line and last_line.endswith(
            f"resume with  usseg train --data {data} --out {run} --resume")
        load_checkpoint(run / "last.pt")                                 # the last whole checkpoint
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(data, tmp_path, caplog):
    run = tmp_path / "run"
    with lock_held(run, "usseg train --data elsewhere") as pid:
        assert main(["--data", str(data), "--out", str(run), *TINY]) == 2
    [message] = errors(caplog)
    assert message.startswith(f"{run}: another usseg run is writing into this folder (pid {pid} on ")
    assert "usseg train --data elsewhere" in message and not (run / "last.pt").exists()


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(data, tmp_path):
    run = tmp_path / "run"
    done = terminated(["train", "--data", str(data), "--out", str(run), *TINY, "--epochs", "500"], tmp_path,
                      ready=lambda: (run / "last.pt").is_file())
    assert done.returncode == 143, done.stderr
    last = load_checkpoint(run / "last.pt")
    assert no_traceback(done.stderr)
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: stopped (SIGTERM); {run / 'last.pt'} holds epoch {last['epoch'] + 1}: resume with  "
        f"usseg train --data {data} --out {run} --resume")
    assert not (run / ".usseg.lock").exists()
