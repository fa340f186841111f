"""The runtime starts where Numba can write no cache: a read-only install, run without a writable HOME.

Numba refuses to create a ``cache=True`` kernel when neither ``__pycache__`` beside the source nor
the user cache under HOME takes a file. The runtime copied to a temporary folder, with a plain file
named ``__pycache__`` in each of its folders and HOME pointing at a file, fails both checks even
for root. Each case runs in a fresh interpreter, since the choice is made once per process.
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


def read_only_copy(root: Path) -> Path:
    """The runtime's sources under root/usseg/runtime, where no __pycache__ folder can be made."""
    source = Path(usseg.runtime.__file__).parent
    target = root / "usseg" / "runtime"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        (folder / "__pycache__").write_text("")
    return root


def cache_indexes(folder: Path) -> set[str]:
    """``module.kernel`` of every Numba cache index under folder."""
    return {p.name.split("-")[0] for p in folder.rglob("*.nbi")}


@dataclass(frozen=True)
class Case:
    read_only: bool  # the copy without __pycache__ and HOME a file, else the installed package
    cache_env: str  # USSEG_CACHE_DIR: "" unset, "folder" a fresh folder, "file" a file (refused)
    temp_writable: bool  # whether the system temp folder takes a folder
    log_info: bool  # whether the script shows INFO records (a plain run shows warnings only)
    spine: bool  # whether it runs postprocess_spine (compiles for seconds), else only the argmax


CASES = {
    # Numba's own folders work: nothing redirected, nothing said.
    "installed": Case(read_only=False, cache_env="", temp_writable=True, log_info=False, spine=True),
    # Read-only install, no writable HOME: a private folder under the temp folder, and a warning.
    "temp-folder": Case(read_only=True, cache_env="", temp_writable=True, log_info=False, spine=True),
    # The operator's USSEG_CACHE_DIR is used, and said at INFO.
    "chosen-folder": Case(read_only=True, cache_env="folder", temp_writable=True, log_info=True, spine=False),
    # Nothing writable at all: no cache, a warning, and the runtime still works.
    "no-cache": Case(read_only=True, cache_env="file", temp_writable=False, log_info=False, spine=False),
}


def run_case(case: Case, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script in a fresh interpreter set up as the case says; returns the run and the copy's
    runtime folder."""
    a_file = tmp_path / "a-file"  # no folder can be made under a file, not even by root
    a_file.write_text("")
    np.save(tmp_path / "labels.npy", spine_labels())
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "USSEG_CACHE_DIR")}
    env.update(TMPDIR=str(tmp_path / "tmp"), PYTHONDONTWRITEBYTECODE="1")
    if case.read_only:
        env["HOME"] = str(a_file)
    if case.cache_env:
        env["USSEG_CACHE_DIR"] = str(tmp_path / "chosen" if case.cache_env == "folder" else a_file)
    site = read_only_copy(tmp_path / "site") if case.read_only else None
    script = _SCRIPT.format(
        log_info=case.log_info,
        spine=case.spine,
        temp_dir="" if case.temp_writable else str(a_file),
        package_root=str(site or ""),
        installed=str(Path(usseg.runtime.__file__).parent),
        labels_file=str(tmp_path / "labels.npy"),
        result_file=str(tmp_path / "result.npz"),
    )
    run = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300)
    return run, (site / "usseg" / "runtime" if site else Path())


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
    if name == "installed":
        assert said == [] and not any(temp.iterdir())
    elif name == "temp-folder":
        assert said == [(f"Numba cannot cache kernels beside {runtime_copy} or in the user cache folder (is HOME "
                         f"writable?); caching them in {private} (set USSEG_CACHE_DIR to choose the folder)")]
        assert private.parent.stat().st_mode & 0o777 == 0o700  # Numba unpickles what it finds there
        assert kernels <= cache_indexes(private)
    elif name == "chosen-folder":
        assert said == [(f"INFO usseg.runtime: Numba cannot cache kernels beside {runtime_copy} or in the user "
                         f"cache folder (is HOME writable?); caching them in {chosen / 'numba'}")]
        assert cache_indexes(chosen) == {"decode._argmax"} and not any(temp.iterdir())
    else:
        assert len(said) == 1 and said[0].startswith("Numba cannot cache kernels (cannot cache function "), said
        assert said[0].endswith("compiling them on every start (set USSEG_CACHE_DIR to a writable folder to "
                                "keep them)")
        assert not any(temp.iterdir()) and not chosen.exists()
        assert not cache_indexes(tmp_path)
