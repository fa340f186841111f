"""Near-duplicate frames across splits: a val or test frame that is almost a copy of a train
frame (the next frame of the same sweep, the same patient re-saved) makes its score a memory test.

Each frame becomes a 32x32 grey thumbnail (area-averaged, so speckle and a pixel's shift wash out),
centred and scaled to unit length; the similarity of two frames is the Pearson correlation of
their thumbnails, and a val or test frame is a near-duplicate when its most similar train frame
reaches ``THRESHOLD`` (0.95). Measured: a train frame with noise (sigma 8 grey levels) and a 1-px
shift scores 0.998 against its original; independent phantom frames at most 0.86. Only images
are compared: masks are never read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import cv2
import numpy as np

THUMBNAIL = 32
THRESHOLD = 0.95
EXAMPLES = 5
METHOD = f"Pearson correlation of {THUMBNAIL}x{THUMBNAIL} grey thumbnails"
CHUNK = 1024  # val/test frames compared at a time (bounds the similarity matrix's memory)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """An 8-bit grey frame as a unit-length, zero-mean float32 vector (zeros for a flat frame)."""
    small = cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-6 else np.zeros_like(small)


@dataclass(frozen=True)
class Leakage:
    """What the check found: per split, frames checked and frames with a near-duplicate in train,
    and the closest pairs as examples."""

    method: str
    threshold: float
    checked: dict[str, int]
    near_duplicates: dict[str, int]
    examples: list[dict]  # {"split", "id", "train_id", "similarity"}, most similar first

    @property
    def found(self) -> int:
        return sum(self.near_duplicates.values())

    def to_dict(self) -> dict:
        return asdict(self)

    def warning(self) -> str | None:
        """One line for the log, None when nothing was found."""
        if not self.found:
            return None
        counts = ", ".join(f"{n} of {self.checked[s]} {s}" for s, n in self.near_duplicates.items() if n)
        pairs = "; ".join(f"{e['split']} {e['id']} ~ train {e['train_id']} ({e['similarity']:.3f})"
                          for e in self.examples[:3])
        return (f"near-duplicates of train frames: {counts} frames ({self.method} >= {self.threshold}), e.g. "
                f"{pairs}; scores on them are inflated: keep frames of one sweep or patient on one side "
                f"(usseg prepare --groups / --group-pattern)")

    def summary(self) -> str:
        checked = ", ".join(f"{n} {s}" for s, n in self.checked.items())
        return f"leakage check: {self.found} near-duplicates of train frames among {checked} frames " \
               f"({self.method} >= {self.threshold})"


def near_duplicates(thumbs: dict[str, np.ndarray], splits: dict[str, str], threshold: float = THRESHOLD,
                    examples: int = EXAMPLES) -> Leakage:
    """Compare every val and test thumbnail with every train thumbnail."""
    train = sorted(i for i, s in splits.items() if s == "train" and i in thumbs)
    checked = {s: sorted(i for i, v in splits.items() if v == s and i in thumbs) for s in ("val", "test")}
    counts = {s: 0 for s in checked}
    pairs: list[dict] = []
    if train:
        bank = np.stack([thumbs[i] for i in train])
        for split, ids in checked.items():
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                sims = np.stack([thumbs[i] for i in chunk]) @ bank.T
                best = sims.argmax(axis=1)
                for item_id, j, sim in zip(chunk, best, sims[np.arange(len(chunk)), best]):
                    if sim >= threshold:
                        counts[split] += 1
                        pairs.append({"split": split, "id": item_id, "train_id": train[j],
                                      "similarity": round(float(sim), 4)})
    pairs.sort(key=lambda p: (-p["similarity"], p["split"], p["id"]))
    return Leakage(METHOD, threshold, {s: len(ids) for s, ids in checked.items()}, counts, pairs[:examples])


def near_duplicate_groups(thumbs: dict[str, np.ndarray], threshold: float = THRESHOLD) -> dict[str, int]:
    """Each frame's group: frames joined by a chain of near-duplicate pairs share one (the connected
    components of the "similarity >= threshold" graph), so that a split by groups cannot put a
    frame on one side and its near-copy on the other. Numbered 0.. in the order of ``thumbs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = list(thumbs)
    if not ids:
        return {}
    bank = np.stack([thumbs[i] for i in ids])
    rows, cols = [], []
    for start in range(0, len(ids), CHUNK):
        r, c = np.nonzero(bank[start:start + CHUNK] @ bank.T >= threshold)
        rows.append(r + start)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    return dict(zip(ids, labels.tolist()))


def thumbnails(items: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {item_id: thumbnail(image) for item_id, image in items}
