"""usseg prepare at its input boundary: annotation keys become file names only when they are plain
names, --out never overlaps an input, every bad value is one clear line and an exit code, and
nothing outside --out changes (each test hashes the tree around it before and after)."""

import json
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
from boundary_support import no_traceback, run_usseg, tree_digest

from usseg.train.io import DataError
from usseg.train.maskfolder import open_mask_folder, read_split
from usseg.train.prepare import main as prepare_main

SHAPES = [["MID", "line", [[32, 2], [33, 45]]], ["VTB", "rect", [[10, 35], [54, 44]]]]


def seed_set(root, keys=("f0", "f1", "f2", "f3"), extra: dict | None = None, text: str | None = None):
    """An image folder with one 48x64 frame per key and annotations.json naming them (+ ``extra``
    entries, or the raw JSON ``text``)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for key in keys:
        cv2.imwrite(str(root / "images" / f"{key}.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
    ann = {key: SHAPES for key in keys} | (extra or {})
    (root / "annotations.json").write_text(text if text is not None else json.dumps(ann))
    return root / "annotations.json", root / "images"


def args_for(annotations, images, out, *more):
    return ["--annotations", str(annotations), "--images", str(images), "--out", str(out), *more]


@pytest.fixture
def victim(tmp_path):
    """A file outside every folder the command is given, that a bad key would have overwritten."""
    folder = tmp_path / "victim"
    folder.mkdir()
    cv2.imwrite(str(folder / "important.png"), np.full((48, 64), 200, np.uint8))
    return folder / "important"


def out_files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


@pytest.mark.parametrize("make_key, reason", [
    (lambda victim: str(victim), "path separator"),                       # an absolute path
    (lambda victim: "../../victim/important", "path separator"),          # out of --out
    (lambda victim: "sub/f9", "path separator"),
    (lambda victim: "..\\victim\\important", "path separator"),           # Windows' separator
])
def test_prepare_refuses_key_with_path_separator(tmp_path, victim, caplog, make_key, reason):
    key = make_key(victim)
    annotations, images = seed_set(tmp_path / "src", extra={key: SHAPES})
    before = tree_digest(tmp_path)
    rc = prepare_main(args_for(annotations, images, tmp_path / "out"))
    assert rc == 1
    assert f"key {key!r}: not a plain file name (it contains a {reason})" in caplog.text
    assert tree_digest(tmp_path, skip=tmp_path / "out") == before
    assert sorted(read_split(tmp_path / "out" / "split.csv")) == ["f0", "f1", "f2", "f3"]
    assert all(".." not in name for name in out_files(tmp_path / "out"))


@pytest.mark.parametrize("key, reason", [
    ("..", "contains '..'"),
    ("a..b", "contains '..'"),
    (".hidden", "starts with '.'"),
    ("", "it is empty"),
    ("f\x00x", "control character"),
    ("f\nx", "control character"),
    ("f\x1bx", "control character"),
    ("C:evil", "drive name"),
    ("\ud800", "not valid Unicode"),
    ("x" * 201, "201 bytes long"),
    (" ", "starts or ends with a space"),
    ("img0 ", "starts or ends with a space"),
    (" img0", "starts or ends with a space"),
    ("CON", "device name reserved on Windows"),
    ("nul.backup", "device name reserved on Windows"),
    ("com1", "device name reserved on Windows"),
    ("gpj.\u202eevil", "invisible formatting character U+202E"),        # shows as "live.jpg"
    ("img\u200b0", "invisible formatting character U+200B"),           # looks like img0
    ("\ufeffimg0", "invisible formatting character U+FEFF"),
])
def test_prepare_refuses_key_with_dotdot_control_character_or_odd_form(tmp_path, caplog, key, reason):
    annotations, images = seed_set(tmp_path / "src", extra={key: SHAPES})
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 1
    assert f"key {key!r}: not a plain file name" in caplog.text and reason in caplog.text
    assert tree_digest(tmp_path, skip=tmp_path / "out") == before
    assert len(open_mask_folder(tmp_path / "out").ids()) == 4


def test_prepare_strict_stops_at_a_bad_key_and_writes_nothing(tmp_path, victim, caplog):
    annotations, images = seed_set(tmp_path / "src", extra={str(victim): SHAPES})
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, tmp_path / "out", "--strict")) == 2
    assert "not a plain file name" in caplog.text
    assert tree_digest(tmp_path) == before  # no --out, no temporary left beside it


def test_prepare_reports_duplicate_keys_and_skips_them(tmp_path, caplog):
    shapes = json.dumps(SHAPES)
    text = f'{{"f0": {shapes}, "f1": {shapes}, "f1": [], "f2": {shapes}}}'
    annotations, images = seed_set(tmp_path / "src", keys=("f0", "f1", "f2"), text=text)
    assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 1
    assert "key 'f1': appears more than once" in caplog.text
    assert sorted(read_split(tmp_path / "out" / "split.csv")) == ["f0", "f2"]
    assert prepare_main(args_for(annotations, images, tmp_path / "strict", "--strict")) == 2
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("where, how", [
    ("images", "is the image folder"),
    ("src", "contains the annotation file"),            # the folder that holds annotations and images
    (".", "contains the annotation file"),              # a folder above them
    ("images/sub", "is inside the image folder"),
])
def test_prepare_refuses_out_overlapping_an_input(tmp_path, capsys, where, how):
    annotations, images = seed_set(tmp_path / "src")
    out = {"images": images, "src": tmp_path / "src", ".": tmp_path, "images/sub": images / "sub"}[where]
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, out, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert f"--out {out} {how}" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(tmp_path) == before


def test_prepare_refuses_out_overlapping_an_input_through_a_link(tmp_path, capsys):
    annotations, images = seed_set(tmp_path / "src")
    (tmp_path / "link").symlink_to(images)
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, tmp_path / "link", "--overwrite")) == 2
    assert "is the image folder" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("where, how", [("parent", "contains the mask folder"), ("inside", "is inside the mask folder")])
def test_prepare_refuses_out_overlapping_the_mask_folder(tmp_path, capsys, where, how):
    annotations, images = seed_set(tmp_path / "src")
    data = tmp_path / "sets" / "data"
    assert prepare_main(args_for(annotations, images, data)) == 0
    out = data.parent if where == "parent" else data / "masks" / "again"
    before = tree_digest(tmp_path)
    assert prepare_main(["--masks-dir", str(data), "--out", str(out), "--overwrite"]) == 2
    assert how in capsys.readouterr().err
    assert tree_digest(tmp_path) == before


def test_prepare_overwrite_replaces_only_a_mask_folder(tmp_path, capsys):
    annotations, images = seed_set(tmp_path / "src")
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, out, "--overwrite")) == 2
    assert "is not a mask folder" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before
    # A folder prepare wrote, and an empty one, are replaced.
    assert prepare_main(args_for(annotations, images, tmp_path / "data")) == 0
    assert prepare_main(args_for(annotations, images, tmp_path / "data", "--overwrite", "--seed", "1")) == 0
    (tmp_path / "empty").mkdir()
    assert prepare_main(args_for(annotations, images, tmp_path / "empty", "--overwrite")) == 0


def test_prepare_refuses_out_that_is_a_file(tmp_path, capsys):
    annotations, images = seed_set(tmp_path / "src")
    (tmp_path / "out").write_text("not a folder")
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, tmp_path / "out", "--overwrite")) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("options, words", [
    (["--val", "0.9", "--test", "0.5"], "must sum to less than 1"),
    (["--val", "nan"], "--val nan: must be a fraction"),
    (["--test", "-0.1"], "--test -0.1: must be a fraction"),
    (["--test", "1"], "--test 1.0: must be a fraction"),
])
def test_prepare_checks_fractions_before_reading_anything(tmp_path, capsys, options, words):
    annotations, images = seed_set(tmp_path / "src")
    before = tree_digest(tmp_path)
    assert prepare_main(args_for(annotations, images, tmp_path / "out", *options)) == 2
    err = capsys.readouterr().err
    assert words in err and no_traceback(err)
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("which, words", [
    ("--annotations", "--annotations {path}: file not found"),
    ("--images", "--images {path}: folder not found"),
    ("--masks-dir", "--masks-dir {path}: folder not found"),
])
def test_prepare_missing_input_is_one_line_before_anything_is_written(tmp_path, capsys, which, words):
    annotations, images = seed_set(tmp_path / "src")
    missing = tmp_path / "missing"
    args = (["--masks-dir", str(missing), "--out", str(tmp_path / "out")] if which == "--masks-dir" else
            args_for(missing if which == "--annotations" else annotations,
                     missing if which == "--images" else images, tmp_path / "new" / "out"))
    before = tree_digest(tmp_path)
    assert prepare_main(args) == 2
    assert capsys.readouterr().err.strip() == "error: " + words.format(path=missing)
    assert tree_digest(tmp_path) == before


def test_prepare_unwritable_out_is_one_line(tmp_path):
    annotations, images = seed_set(tmp_path / "src")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        before = tree_digest(tmp_path)
        done = run_usseg(["prepare", *args_for(annotations, images, locked / "out")], cwd=tmp_path)
        after = tree_digest(tmp_path)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: --out {locked / 'out'}: cannot be created ({locked} is not a writable folder)"
    assert after == before


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_prepare_outputs_follow_the_umask(tmp_path, umask):
    annotations, images = seed_set(tmp_path / "src")
    old = os.umask(umask)
    try:
        assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 0
    finally:
        os.umask(old)
    out = tmp_path / "out"
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")] if p.is_dir()}
    assert modes == {0o777 & ~umask}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~umask}


def test_split_csv_id_that_is_not_a_plain_name_is_refused(tmp_path):
    annotations, images = seed_set(tmp_path / "src")
    out = tmp_path / "out"
    assert prepare_main(args_for(annotations, images, out)) == 0
    (out / "split.csv").write_text("id,split\nf0,train\n../../victim/important,train\n")
    with pytest.raises(DataError, match=r"split.csv:3: id '../../victim/important' cannot name a file"):
        open_mask_folder(out)


def test_resplit_ignores_a_stale_temporary_mask(tmp_path):
    annotations, images = seed_set(tmp_path / "src")
    data = tmp_path / "data"
    assert prepare_main(args_for(annotations, images, data)) == 0
    (data / "masks" / ".f0.png.x1y2.usseg-tmp.png").write_bytes((data / "masks" / "f0.png").read_bytes())
    assert prepare_main(["--masks-dir", str(data), "--val", "0", "--test", "0.5"]) == 0
    assert sorted(read_split(data / "split.csv")) == ["f0", "f1", "f2", "f3"]


def test_prepare_lists_a_few_bad_entries_of_each_kind_then_counts_them(tmp_path, caplog, capsys):
    """A file with thousands of bad keys gives a short log: the first 5 of each kind, then a count."""
    extra = {f"sub/f{i}": SHAPES for i in range(300)}
    extra |= {f"g{i}": [["XYZ", "line", [[1, 1], [5, 5]]]] for i in range(40)}
    annotations, images = seed_set(tmp_path / "src", extra=extra)
    assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 1
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipped: ")]
    assert sum("path separator" in r.getMessage() for r in skipped) == 5
    assert sum("unknown label 'XYZ'" in r.getMessage() for r in skipped) == 5
    assert len(caplog.records) < 20
    assert "skipped 340 bad entries (300 name, 40 label)" in capsys.readouterr().out
    assert sorted(read_split(tmp_path / "out" / "split.csv")) == ["f0", "f1", "f2", "f3"]


# SIGTERM after the first frame is written: the run stops, and nothing of it is left.
STOPPED_RUN = """
import os, signal, sys
from usseg.train import prepare
written = prepare.write_item
def write_then_stop(*args):
    written(*args)
    os.kill(os.getpid(), signal.SIGTERM)
prepare.write_item = write_then_stop
sys.exit(prepare.main(sys.argv[1:]))
"""


def test_prepare_stopped_by_sigterm_leaves_no_temporary_folder(tmp_path):
    annotations, images = seed_set(tmp_path / "src")
    before = tree_digest(tmp_path)
    done = subprocess.run([sys.executable, "-c", STOPPED_RUN, *args_for(annotations, images, tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("error: stopped by SIGTERM; nothing was written and the "
                                                    "temporary files were removed")
    assert tree_digest(tmp_path) == before  # no --out, no hidden .out.*.usseg-tmp beside it


def test_prepare_removes_what_a_killed_run_left_and_keeps_a_running_one(tmp_path, caplog):
    annotations, images = seed_set(tmp_path / "src")
    dead = tmp_path / ".out.k1ll3d.usseg-tmp"           # a folder a killed run was writing
    (dead / "masks").mkdir(parents=True)
    (dead / "masks" / "f0.png").write_bytes(b"half")
    half_file = tmp_path / ".out.x9.usseg-tmp.png"      # a file it was writing
    half_file.write_bytes(b"half")
    with subprocess.Popen(["sleep", "60"]) as other:    # a run still going owns its folder
        busy = tmp_path / ".out.b5sy.usseg-tmp"
        busy.mkdir()
        (busy / ".usseg-owner").write_text(f"{other.pid}\n")
        try:
            assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 0
        finally:
            other.kill()
    assert not dead.exists() and not half_file.exists() and busy.is_dir()
    assert f"removed {dead}, left behind by a run that was stopped" in caplog.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classes.json", "images", "masks", "split.csv"]


def test_prepare_puts_back_a_folder_a_killed_run_had_set_aside(tmp_path, caplog):
    """Killed between moving the old folder aside and moving the new one in: the old one returns."""
    annotations, images = seed_set(tmp_path / "src")
    assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 0
    before = tree_digest(tmp_path / "out")
    (tmp_path / "out").rename(tmp_path / ".out.q7.usseg-tmp.old")
    assert prepare_main(args_for(annotations, images, tmp_path / "out")) == 2  # it is there again, so ...
    assert "already exists (pass --overwrite" in caplog.text                   # ... not replaced unasked
    assert "put back" in caplog.text and tree_digest(tmp_path / "out") == before
    assert not any(".usseg-tmp" in p.name for p in tmp_path.iterdir())
