"""An output folder that a command replaces as a whole: refused, before anything is touched, when
it would destroy an input or a folder the command did not write."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .fileio import LOCK_NAME


def overlap(out: Path, source: Path) -> str | None:
    """How ``out`` overlaps ``source`` (None when they are apart); both taken with links resolved."""
    o, s = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    if o == s:
        return "is"
    if s.is_relative_to(o):
        return "contains"
    if o.is_relative_to(s) and s.is_dir():
        return "is inside"
    return None


def check_out(out: Path, inputs: dict[str, Path], overwrite: bool,
              own: tuple[str, ...], what: str, writer: str) -> None:
    """Refuse an --out that would destroy an input or a folder this command did not write, before
    anything is touched: replacing --out deletes what it holds. ``own`` are the files by which a
    folder this command wrote is known; a folder that holds only a run's lock file
    (:func:`usseg.runtime.fileio.output_lock`) counts as new, so the lock names its holder."""
    for name, source in inputs.items():
        how = overlap(out, source)
        if how is not None:
            raise UsageError(f"--out {out} {how} the {name} {source}; the output folder must lie apart from "
                             f"the inputs, because it is replaced as a whole")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a folder")
    content = [e for e in out.iterdir() if e.name != LOCK_NAME] if out.is_dir() else []
    if out.is_dir() and (content or not (out / LOCK_NAME).exists()):
        if not overwrite:
            raise UsageError(f"--out {out}: already exists (pass --overwrite to replace it)")
        if content and not all((out / name).is_file() for name in own):
            raise UsageError(f"--out {out}: exists and is not a {what} (no {' and '.join(own)}); "
                             f"--overwrite replaces only a folder that {writer} wrote, or an empty one")
    parent = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot be created ({parent} is not a writable folder)")
