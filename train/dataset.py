"""Training data: splits, frames preprocessed once per run, and the per-epoch augmented set.

The preprocessing recipe is deterministic and costly (NLM is ~180 ms per 480x640 frame), so each
frame goes through ``usseg.runtime.preprocess.preprocess`` exactly once per run and is kept in
memory; augmentation then works on the preprocessed float image and its letterboxed mask.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from usseg.runtime.preprocess import Recipe, preprocess

from .augment import ONLINE, Augmenter, sample_key
from .losses import target_fields
from .maskfolder import MaskFolder
from .leakage import METHOD, THRESHOLD, near_duplicate_groups, thumbnail
from .splits import grouped_split, presence_matrix, stratified_split

log = logging.getLogger(__name__)

SHUFFLE = 2       # key stream of the per-epoch shuffling order (augment.py owns 0 and 1)
VAL_SPLIT_SEED = 42


def split_ids(folder: MaskFolder, val_fraction: float) -> dict[str, list[str]]:
    """train / val / test ids; a data set without a val split gets one carved out of train,
    stratified on class presence and always the same for the same data.

    Near-duplicate train frames (neighbours of one sweep; leakage.py) stay on one side of that
    carve: a val frame whose near-copy is trained on scores memory, and early stopping and the
    trials would then favour the network that memorises best.
    """
    parts = {s: folder.ids(s) for s in ("train", "val", "test")}
    if not parts["train"]:
        raise ValueError(f"{folder.root / 'split.csv'}: no 'train' frames")
    if parts["val"]:
        return parts
    train = parts["train"]
    present, thumbs = [], {}
    for item_id in train:
        image, mask = folder.load(item_id)
        present.append(set(np.unique(mask).tolist()))
        thumbs[item_id] = thumbnail(image)
    presence = presence_matrix(present, len(folder.classes))
    groups = near_duplicate_groups(thumbs)
    linked = len(train) - len(set(groups.values()))  # frames that share a group with an earlier one
    how = "stratified on class presence"
    split = None
    if linked:
        try:
            split = grouped_split(train, presence, [str(groups[i]) for i in train], val=val_fraction, test=0.0,
                                  seed=VAL_SPLIT_SEED)
            how += f"; near-duplicates kept together: {len(set(groups.values()))} groups of {len(train)} frames"
        except ValueError:  # (nearly) one sweep: no group to spare for val
            log.warning("%s: the train frames are near-duplicates of one another (%s >= %s); the val carved "
                        "from them scores partly memory", folder.root, METHOD, THRESHOLD)
    if split is None:
        split = stratified_split(train, presence, val=val_fraction, test=0.0, seed=VAL_SPLIT_SEED)
    parts["train"] = sorted(i for i in train if split[i] == "train")
    parts["val"] = sorted(i for i in train if split[i] == "val")
    if not parts["val"]:
        raise ValueError(f"{folder.root}: no val split and too few train frames ({len(train)}) to take one out")
    log.info("%s has no val split: took %d of %d train frames as val (seed %d, %s)",
             folder.root, len(parts["val"]), len(train), VAL_SPLIT_SEED, how)
    return parts


@dataclass(frozen=True)
class Frames:
    """Preprocessed frames at model size: images float32 NxHxW in [0, 1], masks uint8 NxHxW."""

    ids: tuple[str, ...]
    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def load_frames(folder: MaskFolder, ids: list[str], recipe: Recipe, height: int, width: int) -> Frames:
    """Read and preprocess ``ids`` once: letterboxed to height x width, recipe applied."""
    start = time.perf_counter()
    images = np.zeros((len(ids), height, width), np.float32)
    masks = np.zeros((len(ids), height, width), np.uint8)
    for n, item_id in enumerate(ids):
        image, mask = folder.load(item_id)
        _, box = preprocess(image, recipe, height, width, out=images[n])
        masks[n] = box.apply_mask(mask)
    if ids:
        log.info("preprocessed %d frames (recipe %r, %dx%d) in %.1f s", len(ids), recipe.name,
                 height, width, time.perf_counter() - start)
    return Frames(tuple(ids), images, masks)


class SegDataset(Dataset):
    """Frames as tensors: {"image": 1xHxW float, "label": 1xHxW int64, "index": int64
    [, "fields": (C-1)xHxW]}; "index" (the frame's position in the set) lets results computed
    on many processes be put back in frame order.

    With an augmenter, frame i of epoch e is augmented with key (seed, e, i), so the data of an
    epoch does not depend on the worker layout. ``set_epoch`` must come before each epoch's
    loader is made (workers are not persistent and copy the set when they start).
    """

    def __init__(self, frames: Frames, num_classes: int, augmenter: Augmenter | None = None,
                 seed: int = 0) -> None:
        self.frames, self.num_classes, self.augmenter, self.seed = frames, num_classes, augmenter, seed
        self.epoch, self.fields = 0, False

    def set_epoch(self, epoch: int, fields: bool) -> None:
        """Select the epoch's augmentation draws and whether to add the HD loss's target fields."""
        self.epoch, self.fields = epoch, fields

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = self.frames.images[i], self.frames.masks[i]
        if self.augmenter is not None:
            image, mask = self.augmenter(image, mask, sample_key(self.seed, ONLINE, self.epoch, i))
        item = {"image": torch.from_numpy(np.array(image[None], np.float32)),
                "label": torch.from_numpy(mask[None].astype(np.int64)), "index": torch.tensor(i)}
        if self.fields:
            item["fields"] = torch.from_numpy(target_fields(mask, self.num_classes))
        return item


def _worker_init(worker_id: int) -> None:
    """One thread per worker (the main process owns the cores for the model) and seeded RNGs.
    Ctrl-C is left to the main process, which says where the run can be resumed; a worker would
    print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: SegDataset, batch_size: int, shuffle: bool, seed: int, epoch: int,
                num_workers: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A loader whose order is fixed by (seed, epoch) alone, so a resumed run repeats it.

    With ``world_size`` > 1 (training on many processes) a DistributedSampler gives this rank
    its share of the epoch, shuffled with its own per-epoch seed (``set_epoch``); it repeats a
    few frames so that every rank makes the same number of steps. Each frame's augmentation
    draws depend on (seed, epoch, frame) only, so they are the same on whichever rank it lands.
    """
    workers = {"num_workers": num_workers, "worker_init_fn": _worker_init if num_workers else None,
               "persistent_workers": False}
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                     seed=sample_key(seed, SHUFFLE, 0, 0))
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **workers)
    generator = torch.Generator()
    generator.manual_seed(sample_key(seed, SHUFFLE, epoch, 0))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **workers)


def shard_batches(count: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Rank ``rank``'s batches of frames 0..count-1 in order, dealt out whole and round robin.

    The batches are those of one process (frames in order, batch_size at a time), and no frame
    is repeated, unlike DistributedSampler: a metric summed over the ranks' batches equals the
    one-process figure. Ranks may get one batch more or less than others (or none).
    """
    batches = [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    return batches[rank::world_size]


def make_val_loader(dataset: SegDataset, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This rank's share of the validation batches (see ``shard_batches``), in the main process."""
    return DataLoader(dataset, batch_sampler=shard_batches(len(dataset), batch_size, rank, world_size))
