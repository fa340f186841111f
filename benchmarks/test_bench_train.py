"""Training cost on the CPU: train steps, the HD loss per batch, target fields and augmentation.

    .venv/bin/python -m pytest benchmarks/test_bench_train.py --benchmark-enable   (or usseg-bench)

Batches are the profile's own batch size at its model size, with line and box labels like the
phantom's. extra_info carries stage / impl / batch / frames, so usseg-bench reports per-frame
times and frames/s; for the HD loss, MONAI's HausdorffDTLoss (what the seed ran) is the
seed-style row and the figures are per frame of the batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from usseg.train.augment import Augmenter
from usseg.train.config import PROFILES
from usseg.train.losses import HausdorffDT, SegLoss, target_fields
from usseg.train.model import build_model

from .conftest import rounds

NUM_CLASSES = 4
NOT_TRAINED = "random init: a training step's cost, not a trained model's output"
LOSS_CHANGE = {"dicece": "loss: DiceCE + MONAI HausdorffDTLoss (the seed's) -> DiceCE alone",
               "dicece+hd": "HD term: MONAI HausdorffDTLoss -> usseg's, target fields from the loader"}
HD_CHANGE = {"fields-in-loss": "HD term: MONAI HausdorffDTLoss -> usseg's, target fields computed in the loss",
             "fields-from-loader": "HD term: MONAI HausdorffDTLoss -> usseg's, target fields from the loader"}


def _labels(batch: int, height: int, width: int) -> np.ndarray:
    """A midline, a box and a short line per frame, like the spine classes."""
    out = np.zeros((batch, height, width), np.uint8)
    t = max(2, height // 48)
    for b, frame in enumerate(out):
        cx = width // 2 + 3 * b
        cv2.line(frame, (cx, height // 10), (cx + 2, height * 3 // 4), 1, t)
        cv2.rectangle(frame, (cx - width // 5, height * 3 // 4), (cx + width // 5, height * 4 // 5), 2, -1)
        cv2.line(frame, (cx - width // 10, height // 2), (cx + width // 10, height // 2), 3, t)
    return out


def _batch(profile: str, seed: int = 0):
    cfg = PROFILES[profile]
    mcfg = cfg.model_config()
    labels = _labels(cfg.batch_size, mcfg.height, mcfg.width)
    gen = torch.Generator().manual_seed(seed)
    image = torch.from_numpy(labels[:, None] / 3.0).float() + 0.2 * torch.rand(labels[:, None].shape, generator=gen)
    return cfg, mcfg, image, torch.from_numpy(labels[:, None].astype(np.int64))


def _run(benchmark, fn, *, stage, impl, batch, variant, slow=False, pair="", differs=""):
    """``pair``: rows of a stage are compared with the seed-style row of the same pair, and
    ``differs`` says what differs between them."""
    benchmark.extra_info.update(stage=stage, impl=impl, batch=batch, frames=batch, recipe=variant, pair=pair,
                                differs=differs, weights={"trained": False, "note": NOT_TRAINED})
    benchmark.group = stage
    return benchmark.pedantic(fn, rounds=rounds(slow), warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("loss", ["dicece", "dicece+hd", "dicece+monai-hd"])
@pytest.mark.parametrize("profile", ["tiny", "demo"])
def test_train_step(benchmark, profile, loss):
    """One optimiser step (forward, loss, backward, Adam) on the profile's batch: DiceCE alone
    (HD weight 0), blended with usseg's HD term (target fields from the loader), or blended with
    MONAI's HausdorffDTLoss as the seed ran it."""
    from monai.losses import HausdorffDTLoss

    cfg, mcfg, image, labels = _batch(profile)
    torch.manual_seed(0)
    model = build_model(mcfg, NUM_CLASSES).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ours, monai_hd, weight = SegLoss(), HausdorffDTLoss(include_background=False, to_onehot_y=True, softmax=True), cfg.hd_max
    fields = torch.from_numpy(np.stack([target_fields(x[0].numpy().astype(np.uint8), NUM_CLASSES) for x in labels]))

    def objective(logits):
        if loss == "dicece+monai-hd":
            return (1 - weight) * ours.dicece(logits, labels) + weight * monai_hd(logits, labels)
        return ours(logits, labels, weight if loss == "dicece+hd" else 0.0, fields)[0]

    def step():
        optimizer.zero_grad(set_to_none=True)
        objective(model(image)).backward()
        optimizer.step()

    _run(benchmark, step, stage="train step", impl="seed-style" if "monai" in loss else "usseg", batch=len(image),
         variant=f"{profile} {mcfg.height}x{mcfg.width} {loss}", slow=profile != "tiny", pair=profile,
         differs=LOSS_CHANGE.get(loss, ""))


@pytest.mark.parametrize("impl", ["monai", "fields-in-loss", "fields-from-loader"])
def test_hd_loss_per_batch(benchmark, impl):
    """The HausdorffDT term alone, forward + backward, demo batch (same value in all three)."""
    from monai.losses import HausdorffDTLoss

    _, mcfg, image, labels = _batch("demo")
    # Logits near the labels, as in training: every class's predicted mask is non-empty, so no
    # distance transform is skipped (random logits would leave most of them empty).
    onehot = torch.nn.functional.one_hot(labels[:, 0], NUM_CLASSES).permute(0, 3, 1, 2).float()
    gen = torch.Generator().manual_seed(1)
    logits = (2 * torch.randn(onehot.shape, generator=gen) + 3 * onehot).requires_grad_()
    fields = torch.from_numpy(np.stack([target_fields(x[0].numpy().astype(np.uint8), NUM_CLASSES) for x in labels]))
    if impl == "monai":
        loss = HausdorffDTLoss(include_background=False, to_onehot_y=True, softmax=True)
        run = lambda: loss(logits, labels).backward()
    else:
        ours = HausdorffDT()
        given = fields if impl == "fields-from-loader" else None
        run = lambda: ours(logits, labels, given).backward()
    _run(benchmark, run, stage="hd loss", impl="seed-style" if impl == "monai" else "usseg", batch=len(image),
         variant=f"{impl} {mcfg.height}x{mcfg.width}", slow=True, differs=HD_CHANGE.get(impl, ""))


def test_target_fields_per_frame(benchmark):
    """What a loader worker adds per frame while the HD weight is above 0."""
    _, _, _, labels = _batch("demo")
    frame = labels[0, 0].numpy().astype(np.uint8)
    _run(benchmark, lambda: target_fields(frame, NUM_CLASSES), stage="train data", impl="usseg", batch=1,
         variant="hd target fields")


def test_augment_per_frame(benchmark):
    """The seed's four transforms on one preprocessed demo-size frame."""
    _, _, image, labels = _batch("demo")
    img, mask = image[0, 0].numpy(), labels[0, 0].numpy().astype(np.uint8)
    aug, keys = Augmenter(), iter(range(10**9))
    _run(benchmark, lambda: aug(img, mask, next(keys)), stage="train data", impl="usseg", batch=1,
         variant="augment")
