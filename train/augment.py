"""The seed's training augmentation (albumentations 2.x), applied to preprocessed frames.

Image and mask move together; masks use nearest-neighbour interpolation and fill 0 (background),
images fill 0 like the letterbox padding. ``augment`` is a pure function of (image, mask, key):
the key fixes every random draw, so a run is reproducible whatever the worker layout, and a
resumed run draws what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

# The seed's transforms and probabilities (FACTS.md; ShiftScaleRotate became Affine in 2.x).
FLIP_P = 0.5
AFFINE_P = 0.4
ELASTIC_P = 0.3
GRID_P = 0.3


def build_pipeline() -> A.Compose:
    """HorizontalFlip, Affine (shift 5 %, scale 10 %, rotate 10 deg), elastic, grid distortion."""
    nearest, constant = cv2.INTER_NEAREST, cv2.BORDER_CONSTANT
    return A.Compose([
        A.HorizontalFlip(p=FLIP_P),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), rotate=(-10, 10),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=nearest,
                 border_mode=constant, fill=0, fill_mask=0, p=AFFINE_P),
        A.ElasticTransform(alpha=1, sigma=50, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=nearest, border_mode=constant, fill=0, fill_mask=0,
                           p=ELASTIC_P),
        A.GridDistortion(num_steps=5, distort_limit=(-0.1, 0.1), interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=nearest, border_mode=constant, fill=0, fill_mask=0,
                         p=GRID_P),
    ], mask_interpolation=nearest, seed=0)


ONLINE, OFFLINE = 0, 1  # key streams: (epoch, frame) draws and (copy, frame) draws


def sample_key(seed: int, stream: int, step: int, index: int) -> int:
    """A well-mixed 32-bit key for one draw: run seed, stream, epoch or copy number, frame index."""
    return int(np.random.SeedSequence([seed, stream, step, index]).generate_state(1)[0])


class Augmenter:
    """Random wrapper: ``augment(image, mask, key)`` draws the transform parameters from ``key``.

    Args:
        image: float32 HxW preprocessed frame in [0, 1].
        mask: uint8 HxW label map of the same size.
    Returns:
        (image, mask) of the same shapes and dtypes.
    """

    def __init__(self) -> None:
        self.pipeline = build_pipeline()

    def __call__(self, image: np.ndarray, mask: np.ndarray, key: int) -> tuple[np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(key)
        out = self.pipeline(image=image, mask=mask)
        return np.ascontiguousarray(out["image"], np.float32), np.ascontiguousarray(out["mask"], np.uint8)


def offline_copies(images: np.ndarray, masks: np.ndarray, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed's offline augmentation: the frames plus ``copies`` fixed augmented copies of each.

    Args:
        images: float32 NxHxW; masks: uint8 NxHxW.
    Returns:
        arrays of N * (copies + 1) frames, originals first.
    """
    aug = Augmenter()
    out_images, out_masks = [images], [masks]
    for copy in range(copies):
        pairs = [aug(images[i], masks[i], sample_key(seed, OFFLINE, copy, i)) for i in range(len(images))]
        out_images.append(np.stack([p[0] for p in pairs]))
        out_masks.append(np.stack([p[1] for p in pairs]))
    return np.concatenate(out_images), np.concatenate(out_masks)
