"""What the input-boundary tests share: a digest of a folder tree (to prove nothing outside the
output folder changed) and a way to run a command where file permissions really apply (root
ignores them, so as root the command runs without the capabilities that bypass them)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, tuple[int, str]]:
    """{relative path: (mode, sha256)} of every file and folder under ``root`` (``skip`` and what
    lies under it left out); links are recorded by their target, not followed."""
    root = Path(root)
    digest: dict[str, tuple[int, str]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            if skip is not None and path == skip:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = "link:" + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = "folder"
            digest[str(path.relative_to(root))] = (stat.S_IMODE(info.st_mode), content)
    return digest


def _privilege_drop() -> list[str]:
    """The command prefix under which permission bits apply to this process's user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    if subprocess.run(prefix + ["true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here: file permissions cannot be made to apply")
    return prefix


def run_usseg(args: list[str], cwd: Path, permissions_apply: bool = True) -> subprocess.CompletedProcess:
    """``usseg ARGS`` in a child process (permission bits enforced even for root)."""
    prefix = _privilege_drop() if permissions_apply else []
    return subprocess.run(prefix + [sys.executable, "-m", "usseg.runtime.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def no_traceback(text: str) -> bool:
    return "Traceback" not in text
