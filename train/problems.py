"""Bad entries of an annotation source, reported the same way by every reader.

A bad entry (a key that cannot name a file, an unknown label, a point outside the image, a
missing image ...) is an :class:`EntryError` naming the file and the key; its ``kind`` groups it.
A :class:`ProblemLog` raises it under ``--strict``; otherwise it logs the first few of each kind,
counts them all and ends with one summary line, so a file with a million bad keys gives a short
log, not a million lines.
"""

from __future__ import annotations

import logging
from collections import Counter

from .io import DataError

log = logging.getLogger("usseg.prepare")

SHOWN_PER_KIND = 5


class EntryError(DataError):
    """One bad entry (a frame, a key, a shape): the message names the file and the key."""

    def __init__(self, message: str, kind: str = "entry") -> None:
        super().__init__(message)
        self.kind = kind


class ProblemLog:
    """The bad entries of one run: raised when ``strict``, else logged (the first
    ``shown_per_kind`` of each kind) and counted. ``notes`` are things left out on purpose
    (a point annotation, a shape type that draws no area): counted the same way, not errors."""

    def __init__(self, strict: bool = False, shown_per_kind: int = SHOWN_PER_KIND) -> None:
        self.strict = strict
        self.shown_per_kind = shown_per_kind
        self.counts: Counter[str] = Counter()
        self.note_counts: Counter[str] = Counter()
        self.shown: list[str] = []

    def report(self, exc: DataError) -> None:
        if self.strict:
            raise exc
        kind = getattr(exc, "kind", "entry")
        self.counts[kind] += 1
        if self.counts[kind] <= self.shown_per_kind:
            self.shown.append(str(exc))
            log.warning("skipped: %s", exc)
        elif self.counts[kind] == self.shown_per_kind + 1:
            log.warning("more bad entries of kind '%s': counted, not listed one by one", kind)

    def note(self, kind: str, message: str) -> None:
        """Something ignored on purpose (not a bad entry; ``--strict`` does not stop for it)."""
        self.note_counts[kind] += 1
        if self.note_counts[kind] <= self.shown_per_kind:
            log.info("ignored: %s", message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list[str]:
        """One line for the bad entries and one for what was ignored on purpose (none if neither)."""
        lines = []
        if self.counts:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.counts.most_common())
            lines.append(f"skipped {self.total} bad entr{'y' if self.total == 1 else 'ies'} ({kinds}); "
                         f"the first {self.shown_per_kind} of each kind are listed above")
        if self.note_counts:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.note_counts.most_common())
            lines.append(f"ignored on purpose: {kinds}")
        return lines
