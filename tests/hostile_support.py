"""What the hostile-input tests share: another process holding an output folder's lock, and a
command run in a child process that is stopped with SIGTERM once it has started writing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

HOLD_LOCK = """
import pathlib, sys, time
from usseg.runtime.fileio import output_lock
with output_lock(pathlib.Path(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


@contextmanager
def lock_held(folder: Path, command: str) -> Iterator[int]:
    """Another process holds ``folder``'s output lock for ``command``; yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), command], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def terminated(args: list[str], cwd: Path, ready: Callable[[], bool], timeout: float = 240.0) -> subprocess.CompletedProcess:
    """``usseg ARGS`` in a child process, sent SIGTERM as soon as ``ready()`` holds."""
    process = subprocess.Popen([sys.executable, "-m", "usseg.runtime.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the command did not get ready in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
