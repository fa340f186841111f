"""Numba's cache goes to the user's cache folder (or NUMBA_CACHE_DIR, USSEG_CACHE_DIR), never into
the installed package, and the runtime starts where no cache can be written at all.

The runtime is copied to a temporary folder (with a plain file named ``__pycache__`` in each of
its folders, so nothing could be cached beside the sources even by root) and run with HOME
pointing where the case says. Each case runs in a fresh interpreter, since the choice is made once
per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

import usseg.runtime
from usseg.runtime.jit import sources_key
from usseg.runtime.postprocess import postprocess_spine

_SCRIPT = """
import logging, sys, tempfile
if {log_info}:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
if {temp_dir!r}:
    tempfile.tempdir = {temp_dir!r}
if {package_root!r}:
    sys.path.insert(0, {package_root!r})
import numpy as np
import usseg.runtime.decode as decode
from usseg.runtime.postprocess import postprocess_spine
assert decode.__file__.startswith({package_root!r} or {installed!r}), decode.__file__
scores = np.random.default_rng(0).random((4, 6, 7), dtype=np.float32)
assert (decode.argmax_labels(scores, np.empty((6, 7), np.uint8)) == scores.argmax(0)).all()
if {spine}:
    geometry = postprocess_spine(np.load({labels_file!r}))
    np.savez({result_file!r}, masks=geometry.masks, mid=geometry.mid, vtb=geometry.vtb, epi=geometry.epi)
"""


def spine_labels() -> np.ndarray:
    labels = np.zeros((120, 160), np.uint8)
    cv2.rectangle(labels, (40, 30), (70, 60), 2, -1)
    cv2.line(labels, (80, 8), (82, 112), 1, 8)
    cv2.line(labels, (30, 90), (140, 94), 3, 8)
    return labels


def runtime_copy(root: Path, blocked: bool) -> Path:
    """The runtime's sources under root/usseg/runtime; ``blocked``: where no __pycache__ folder can
    be made (else Numba, left to itself, would cache there)."""
    source = Path(usseg.runtime.__file__).parent
    target = root / "usseg" / "runtime"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())] if blocked else []:
        (folder / "__pycache__").write_text("")
    return root


def cache_indexes(folder: Path) -> set[str]:
    """``module.kernel`` of every Numba cache index under folder."""
    return {p.name.split("-")[0] for p in folder.rglob("*.nbi")}


@dataclass(frozen=True)
class Case:
    home_writable: bool  # HOME a fresh folder, else a file (no ~/.cache can be made)
    cache_env: str  # USSEG_CACHE_DIR: "" unset, "folder" a fresh folder, "file" a file (refused)
    temp_writable: bool  # whether the system temp folder takes a folder
    log_info: bool  # whether the script shows INFO records (a plain run shows warnings only)
    spine: bool  # whether it runs postprocess_spine (compiles for seconds), else only the argmax
    numba_env: bool = False  # NUMBA_CACHE_DIR set to a fresh folder


CASES = {
    # A writable HOME: the user's cache folder, nothing said.
    "user-cache": Case(home_writable=True, cache_env="", temp_writable=True, log_info=False, spine=True),
    # Numba's own setting wins over everything.
    "numba-env": Case(home_writable=True, cache_env="folder", temp_writable=True, log_info=False, spine=False,
                      numba_env=True),
    # No writable HOME: a private folder under the temp folder, and a warning.
    "temp-folder": Case(home_writable=False, cache_env="", temp_writable=True, log_info=False, spine=True),
    # The operator's USSEG_CACHE_DIR is used, nothing said even at INFO.
    "chosen-folder": Case(home_writable=False, cache_env="folder", temp_writable=True, log_info=True, spine=False),
    # Nothing writable at all: no cache, warnings, and the runtime still works.
    "no-cache": Case(home_writable=False, cache_env="file", temp_writable=False, log_info=False, spine=False),
}


def run_case(case: Case, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script in a fresh interpreter set up as the case says; returns the run and the copy's
    runtime folder."""
    a_file = tmp_path / "a-file"  # no folder can be made under a file, not even by root
    a_file.write_text("")
    np.save(tmp_path / "labels.npy", spine_labels())
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "USSEG_CACHE_DIR")}
    env.update(TMPDIR=str(tmp_path / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    env["HOME"] = str(tmp_path / "home" if case.home_writable else a_file)
    if case.cache_env:
        env["USSEG_CACHE_DIR"] = str(tmp_path / "chosen" if case.cache_env == "folder" else a_file)
    if case.numba_env:
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-env")
    site = runtime_copy(tmp_path / "site", blocked=not case.home_writable)
    script = _SCRIPT.format(
        log_info=case.log_info,
        spine=case.spine,
        temp_dir="" if case.temp_writable else str(a_file),
        package_root=str(site),
        installed=str(Path(usseg.runtime.__file__).parent),
        labels_file=str(tmp_path / "labels.npy"),
        result_file=str(tmp_path / "result.npz"),
    )
    run = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300)
    return run, site / "usseg" / "runtime"


@pytest.mark.parametrize("name", list(CASES))
def test_runtime_starts_and_caches_where_it_can(tmp_path, name):
    case = CASES[name]
    temp = tmp_path / "tmp"
    temp.mkdir()
    chosen = tmp_path / "chosen"

    run, runtime_copy = run_case(case, tmp_path)

    assert run.returncode == 0, run.stderr
    if case.spine:
        got = np.load(tmp_path / "result.npz", allow_pickle=True)
        want = postprocess_spine(spine_labels())
        assert want.mid is not None and want.vtb is not None and want.epi is not None
        np.testing.assert_array_equal(got["masks"], want.masks)
        for part in ("mid", "vtb", "epi"):
            np.testing.assert_array_equal(got[part], getattr(want, part), err_msg=part)

    said = run.stderr.splitlines()
    kernels = {"decode._argmax", "split._split_classes", "hough._hough_segments", "thinning._thin_in_place"}
    private = temp / f"usseg-{os.getuid()}" / "numba"
    user = tmp_path / "home" / ".cache" / "usseg" / "numba"
    assert not cache_indexes(runtime_copy)  # never beside the package's sources
    if name == "user-cache":
        assert said == [] and not any(temp.iterdir())
        assert kernels <= cache_indexes(user / sources_key(runtime_copy))  # keyed on the sources
        assert [p.name for p in user.iterdir()] == [sources_key(runtime_copy)]
    elif name == "numba-env":
        assert said == [] and cache_indexes(tmp_path / "numba-env") == {"decode._argmax"}
        assert not chosen.exists() and not user.exists()
    elif name == "temp-folder":
        assert said == [(f"Numba cannot cache kernels in the user cache folder {tmp_path / 'a-file' / '.cache' / 'usseg' / 'numba'} "
                         f"(is HOME writable?); caching them in {private} (set USSEG_CACHE_DIR to choose the folder)")]
        assert private.parent.stat().st_mode & 0o777 == 0o700  # Numba unpickles what it finds there
        assert kernels <= cache_indexes(private)
    elif name == "chosen-folder":
        assert said == [] and cache_indexes(chosen) == {"decode._argmax"} and not any(temp.iterdir())
    else:
        assert said == [f"Numba cache: USSEG_CACHE_DIR={tmp_path / 'a-file'} cannot be written; looking further",
                        f"Numba cannot cache kernels: no writable cache folder ({tmp_path / 'a-file' / '.cache' / 'usseg' / 'numba'}); "
                        f"compiling them on every start (set USSEG_CACHE_DIR to a writable folder to keep them)"]
        assert not any(temp.iterdir()) and not chosen.exists()
        assert not cache_indexes(tmp_path)


def test_the_cache_key_follows_every_source_file(tmp_path):
    """Any change to any runtime source (a kernel another file's kernel calls, say) is a new cache
    folder; a copy of the same sources is the same folder."""
    copy = runtime_copy(tmp_path, blocked=False) / "usseg" / "runtime"
    key = sources_key(copy)
    assert key == sources_key(Path(usseg.runtime.__file__).parent) and len(key) == 16
    nested = next(p for p in sorted(copy.rglob("*.py")) if p.parent != copy)
    nested.write_bytes(nested.read_bytes() + b"# changed\n")
    assert sources_key(copy) != key
    nested.write_bytes(nested.read_bytes()[:-len(b"# changed\n")])
    assert sources_key(copy) == key
    (copy / "new_module.py").write_text("")
    assert sources_key(copy) != key
