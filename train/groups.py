"""Which frames belong together (a patient, a sweep): from a CSV file or from the file names.

    --groups groups.csv          id,group per line (the id is the frame's file stem)
    --group-pattern 'p(\\d+)_'    the group is the regex's first capture group in the id (the whole
                                 match when it has none); re.search, so it may match anywhere

Every frame needs a group: a frame without one is an error naming it, not a group of its own
(that would quietly undo the grouping).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from usseg.runtime.errors import UsageError

from .io import DataError

SHOWN = 5


def compile_pattern(text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise UsageError(f"--group-pattern {text!r}: not a regular expression ({exc})") from None


def read_groups_csv(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"id", "group"} <= set(reader.fieldnames):
                raise DataError(f"{path}: expected the header 'id,group', got {reader.fieldnames}")
            groups: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                item_id, group = (row.get("id") or "").strip(), (row.get("group") or "").strip()
                if not item_id or not group:
                    raise DataError(f"{path}:{line}: an id and a group are needed, got {item_id!r:.60}, {group!r:.60}")
                if groups.get(item_id, group) != group:
                    raise DataError(f"{path}:{line}: id {item_id!r:.60} is given two groups")
                groups[item_id] = group
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return groups


def _missing(ids: list[str], source: str) -> DataError:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return DataError(f"{source}: no group for {len(ids)} frame(s): {ids[:SHOWN]}{more}; every frame needs one")


def frame_groups(ids: list[str], csv_path: Path | None = None, pattern: str | None = None) -> list[str]:
    """The group of each id, from ``csv_path`` or ``pattern``."""
    if csv_path is not None:
        table = read_groups_csv(csv_path)
        missing = [i for i in ids if i not in table]
        if missing:
            raise _missing(missing, str(csv_path))
        return [table[i] for i in ids]
    regex = compile_pattern(pattern)
    groups, missing = [], []
    for item_id in ids:
        m = regex.search(item_id)
        if m is None or not (m.group(1) if regex.groups else m.group(0)):
            missing.append(item_id)
        else:
            groups.append(m.group(1) if regex.groups else m.group(0))
    if missing:
        raise _missing(missing, f"--group-pattern {pattern!r}")
    return groups
