"""``--from seed``: the seed's annotations.json + image folder (``usseg.train.seedformat``)."""

from __future__ import annotations

from collections.abc import Iterator

from usseg.runtime.contract import SPINE_CLASSES

from ..problems import ProblemLog
from ..seedformat import iter_seed_dataset
from .base import Imported, ImportedFrame, SourceOptions


def read(options: SourceOptions, problems: ProblemLog) -> Imported:
    def frames() -> Iterator[ImportedFrame]:
        for item in iter_seed_dataset(options.annotations, options.images, problems):
            yield ImportedFrame(item.key, item.image, item.mask)

    return Imported(SPINE_CLASSES, frames())
