"""``--from masks``: an existing mask folder, every mask checked as it is read (its size against
its image's, its class indices against classes.json)."""

from __future__ import annotations

from collections.abc import Iterator

from usseg.runtime.fileio import TMP_MARK

from ..io import DataError
from ..maskfolder import MaskFolder, read_classes
from ..problems import EntryError, ProblemLog
from .base import Imported, ImportedFrame, SourceOptions, frame_key


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    root = options.masks_dir
    classes = read_classes(root / "classes.json")
    paths = sorted(p for p in (root / "masks").glob("*.png") if TMP_MARK not in p.name)  # not a killed run's
    if not paths:
        raise DataError(f"{root / 'masks'}: no mask PNGs found")

    def frames() -> Iterator[ImportedFrame]:
        for path in paths:
            try:
                key = frame_key(path, str(path))
                image, mask = MaskFolder(root, classes, {key: "train"}).load(key)
            except DataError as exc:
                problems.report(exc if isinstance(exc, EntryError) else EntryError(str(exc), "mask"))
                continue
            yield ImportedFrame(key, image, mask)

    return Imported(classes, frames())
