"""A runtime-only install answers a command whose extra is missing with the extra to install; the
live view off loopback wants its token; export shares its folder with no other run and names the
model file when the disk is full."""

import errno
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from boundary_support import no_traceback, tree_digest
from hostile_support import lock_held

from usseg.runtime import fileio
from usseg.runtime.extras import EXTRAS
from usseg.runtime.view import LiveView

ROOT = Path(__file__).resolve().parents[1]

_WITHOUT = """
import sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None  # as if not installed: importing it raises ModuleNotFoundError
from usseg.runtime.cli import main
sys.exit(main(sys.argv[3:]))
"""


def without(modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WITHOUT, "-", modules, *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("missing, args, extra", [
    ("albumentations", ["train", "--help"], "train"),
    ("torch", ["train", "--data", "d", "--out", "r"], "train"),
    ("monai", ["evaluate", "--help"], "train"),
])
def test_a_missing_extra_is_one_line_naming_it(missing, args, extra):
    done = without(missing, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: usseg {args[0]} needs the '{extra}' extra "
                                                    f"({missing} is not installed): pip install \"usseg[{extra}]\"")
    assert no_traceback(done.stderr) and done.stdout == ""


def test_export_without_torch_names_the_extra_once_it_needs_torch(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"x")
    assert without("torch", "export", "--help").returncode == 0  # its options need no torch
    done = without("torch", "export", "--model", str(checkpoint), "--out", str(tmp_path / "models"))
    assert done.returncode == 2 and no_traceback(done.stderr), done.stderr
    assert done.stderr.strip().endswith("(torch is not installed): pip install \"usseg[train]\"")
    assert not (tmp_path / "models").exists()


def test_demo_without_torch_names_the_extra_and_touches_no_folder(tmp_path):
    done = without("torch", "demo", "--out", str(tmp_path / "demo"))
    assert done.returncode == 2 and done.stderr.strip().endswith("(torch is not installed): pip install \"usseg[train]\"")
    assert not (tmp_path / "demo").exists()


def test_predict_without_onnxruntime_names_both_runtime_extras(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    done = without("onnxruntime", "predict", "--model", str(tmp_path / "m.onnx"), str(image), "--out",
                   str(tmp_path / "out"))
    assert done.returncode == 2 and no_traceback(done.stderr), done.stderr
    assert done.stderr.strip().endswith("(onnxruntime is not installed): pip install \"usseg[cpu]\" (or "
                                        "\"usseg[gpu]\" on a GPU machine)")


def test_a_missing_module_no_extra_brings_is_not_hidden():
    done = without("usseg.train.loop", "train", "--data", "d", "--out", "r")
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr


def test_the_extras_table_covers_every_optional_dependency():
    """Each package of the train, dicom, triton and cpu extras is known by an import name it installs."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    provided = importlib.metadata.packages_distributions()  # import name -> distributions
    by_distribution = {}
    for module, distributions in provided.items():
        for dist in distributions:
            by_distribution.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    for extra in ("train", "dicom", "triton", "cpu"):
        for requirement in extras[extra]:
            dist = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            modules = by_distribution.get(dist, set())
            assert any(EXTRAS.get(m) == extra for m in modules), (extra, dist, modules)


# -- the live view's token -------------------------------------------------------------------------------------
def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_the_live_view_off_loopback_wants_its_token():
    with LiveView(host="0.0.0.0", port=0) as view:
        token = view.token
        assert len(token) >= 32 and view.url == f"http://0.0.0.0:{view.port}/?token={token}"
        base = f"http://127.0.0.1:{view.port}/"
        assert get(base)[0] == 403 and get(base + "status.json")[0] == 403 and get(base + "frame.jpg")[0] == 403
        assert get(base + "status.json?token=wrong-token-value")[0] == 403
        status, headers = get(base + f"?token={token}")
        assert status == 200
        cookie = headers["Set-Cookie"].split(";")[0]
        assert cookie == f"usseg-view-{view.port}={token}" and "HttpOnly" in headers["Set-Cookie"]
        assert get(base + "status.json", {"Cookie": cookie})[0] == 200          # what the page's requests carry
        assert get(base + "status.json", {"Authorization": f"token {token}"})[0] == 200
        assert get(base + "status.json", {"Cookie": f"usseg-view-{view.port}=guess"})[0] == 403


def test_the_live_view_takes_a_given_token_and_loopback_needs_none():
    with LiveView(host="0.0.0.0", port=0, token="my-own-token-123") as view:
        assert get(f"http://127.0.0.1:{view.port}/status.json?token=my-own-token-123")[0] == 200
    with LiveView(port=0) as view:
        assert view.token is None and get(view.url + "status.json")[0] == 200


@pytest.mark.parametrize("token", ["short", "has space in it", "semi;colon=cookie", ""])
def test_a_token_that_is_not_url_and_cookie_safe_is_refused_before_the_model_loads(tmp_path, capsys, token):
    from usseg.runtime.stream_cli import main as stream_main

    assert stream_main(["--model", str(tmp_path / "none.onnx"), "--source", "0", "--view", "--token", token]) == 2
    assert "--token: 8 to 200 letters, digits, '-' or '_'" in capsys.readouterr().err


# -- export ------------------------------------------------------------------------------------------------------
def test_export_into_a_folder_another_run_writes_is_refused(tmp_path, capsys):
    from usseg.export.cli import main as export_main

    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read")
    with lock_held(tmp_path / "models", "usseg export --model other.pt") as pid:
        assert export_main(["--model", str(checkpoint), "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert f"another usseg run is writing into this folder (pid {pid} on " in err and no_traceback(err)


def test_export_on_a_full_disk_names_the_model_file_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    from test_train import make_mask_folder

    from usseg.export import convert
    from usseg.export.cli import main as export_main
    from usseg.train.train_cli import main as train_main

    data = make_mask_folder(tmp_path / "data", n=8, height=32, width=40, test=2)
    run = tmp_path / "run"
    assert train_main(["--data", str(data), "--out", str(run), "--profile", "tiny", "--epochs", "1", "--device", "cpu",
                       "--no-progress"]) == 0

    out = tmp_path / "models"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the previous model")
    before = tree_digest(out)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert.onnx, "save", no_space)  # the onnx module: every ONNX file written
    assert export_main(["--model", str(run / "best.pt"), "--out", str(out), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {out / 'model.onnx'}: cannot write the model (No space left on device)"
    assert tree_digest(out) == before  # the old model, no temporaries, no lock


# -- prepare and extract replace their output folder whole: the lock moves with it ----------------
def test_prepare_and_extract_refuse_a_folder_another_run_writes_into(tmp_path, tiny_seed_dataset, capsys):
    from usseg.runtime.extract import main as extract_main
    from usseg.train.prepare import main as prepare_main

    annotations, images = tiny_seed_dataset
    out = tmp_path / "data"
    with lock_held(out, "usseg prepare --out data") as pid:
        assert prepare_main(["--annotations", str(annotations), "--images", str(images), "--out", str(out)]) == 2
        assert f"{out}: another usseg run is writing into this folder (pid {pid} on " in capsys.readouterr().err
        assert extract_main(["--source", str(images / "*.png"), "--out", str(out)]) == 2
        assert f"(pid {pid} on " in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [fileio.LOCK_NAME]  # nothing of either run
    assert prepare_main(["--annotations", str(annotations), "--images", str(images), "--out", str(out)]) == 0
    assert (out / "split.csv").is_file() and not (out / fileio.LOCK_NAME).exists()


def test_the_lock_stays_held_when_a_run_replaces_its_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with fileio.output_lock(out, "usseg prepare"):
        inode = (out / fileio.LOCK_NAME).stat().st_ino
        with fileio.replace_dir(out) as tmp:
            (tmp / "new.txt").write_text("this run")
        assert sorted(p.name for p in out.iterdir()) == [fileio.LOCK_NAME, "new.txt"]
        assert (out / fileio.LOCK_NAME).stat().st_ino == inode  # the same file: the flock is still ours
        with pytest.raises(fileio.OutputLockedError, match="another usseg run is writing into this folder"):
            subprocess_lock(out)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def subprocess_lock(folder):
    """Take ``folder``'s lock in another process; raises OutputLockedError with its message when held."""
    code = ("import sys, pathlib\nfrom usseg.runtime.fileio import output_lock, OutputLockedError\n"
            "try:\n    with output_lock(pathlib.Path(sys.argv[1]), 'probe'): pass\n"
            "except OutputLockedError as e:\n    print(e); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode == 3:
        raise fileio.OutputLockedError(done.stdout.strip())
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args", [
    ["train", "--data", "data", "--out=--resume"],
    ["predict", "--model", "m.onnx", "--input", "frames", "--out=-x"],
    ["export", "--model", "best.pt", "--out=--int8"],
    ["plan", "--data", "data", "--out=--resume"],
])
def test_an_option_given_as_the_output_folder_is_refused_before_anything_runs(args, tmp_path, monkeypatch, capsys):
    from usseg.runtime.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    value = args[-1].split("=", 1)[1]
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and list(tmp_path.iterdir()) == []
    assert re.search(rf"error: argument (-o/)?--out: {re.escape(repr(value))} looks like an option, not a folder "
                     rf"\(write \./{re.escape(value)} for a folder of that name\)", err), err


def test_a_folder_whose_name_starts_with_a_dash_is_given_as_a_path(tmp_path):
    from usseg.runtime.cli import output_folder

    assert output_folder("./--resume") == Path("--resume") and output_folder("runs/-x") == Path("runs/-x")
