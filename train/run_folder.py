"""The run folder's life cycle: what a new run, a resumed one and an interrupted one find there."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from usseg.runtime.fileio import remove_stale_temporaries

from .checkpoint import load_checkpoint
from .io import DataError

log = logging.getLogger("usseg.train.loop")

OLD_TMP_SUFFIX = ".tmp.pt"  # temporaries of checkpoints written before names carried TMP_MARK


def clean_temporaries(out: Path) -> list[Path]:
    """Remove what killed writes left in the run folder (a checkpoint write killed mid-way)."""
    removed = remove_stale_temporaries(out)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(OLD_TMP_SUFFIX) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for path in removed:
        log.info("removed %s, left by an interrupted write", path)
    return removed


def resume_hint(out: Path, data_dir: str | Path, why: str = "interrupted") -> str:
    """One line for a run that ended early (``why``: interrupted, stopped by a signal, an output
    that could not be written): where it can go on from."""
    last = Path(out) / "last.pt"
    try:
        epoch = int(load_checkpoint(last)["epoch"]) + 1
    except DataError:  # no checkpoint yet
        return f"{why}; before the first checkpoint: nothing to resume in {out}"
    return f"{why}; {last} holds epoch {epoch}: resume with  usseg train --data {data_dir} --out {out} --resume"


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """A resume needs last.pt; a new run must not replace one unless told to."""
    last = out / "last.pt"
    if resume and not last.is_file():
        raise DataError(f"{last}: nothing to resume")
    if not resume and last.exists() and not overwrite:
        raise DataError(f"{out}: already holds a run; pass --resume to continue it or --overwrite to start again")


def clear_run(out: Path) -> None:
    """Remove a previous run's outputs so that nothing stale mixes with the new run."""
    for name in ("best.pt", "last.pt", "metrics.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tb", ignore_errors=True)
