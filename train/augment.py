"""Training augmentation (albumentations 2.x) on preprocessed frames: the seed's four spatial
transforms by default, with strengths and optional intensity changes set by ``AugmentParams``,
and, when asked, nnU-Net's intensity set (Gaussian noise, Gaussian blur, low-resolution
simulation, gamma; its 2D defaults are ``NNUNET_INTENSITY``).

Image and mask move together; masks use nearest-neighbour interpolation and fill 0 (background),
images fill 0 like the letterbox padding. ``augment`` is a pure function of (image, mask, key):
the key fixes every random draw, so a run is reproducible whatever the worker layout, and a
resumed run draws what the uninterrupted one would have drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import albumentations as A
import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the training augmentation; the defaults are the seed's four transforms
    (FACTS.md; ShiftScaleRotate became Affine in 2.x) and no intensity change.

    Probabilities are per frame; ``brightness`` and ``contrast`` are albumentations limits
    (+-fraction of the grey range), ``gamma`` a +-fraction around 1.
    """

    flip: float = 0.5          # horizontal flip
    affine: float = 0.4        # shift, scale and rotate together
    shift: float = 0.05        # +- fraction of the size
    scale: float = 0.1         # +- fraction
    rotate: float = 10.0       # +- degrees
    elastic: float = 0.3
    grid: float = 0.3
    intensity: float = 0.0     # probability of a brightness / contrast change
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0         # probability-weighted with ``intensity``: gamma in [1 - g, 1 + g]
    noise: float = 0.0         # probability of Gaussian noise...
    noise_std: float = 0.1     # ...with a standard deviation drawn in [0, noise_std] of the [0, 1] range
    blur: float = 0.0          # probability of a Gaussian blur...
    blur_sigma: float = 1.0    # ...with sigma drawn in [0.5, blur_sigma] px
    lowres: float = 0.0        # probability of simulated low resolution: down by a factor drawn in...
    lowres_scale: float = 0.5  # ...[lowres_scale, 1] (nearest neighbour), back up (bicubic)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                # ValueError like every other configuration error (the CLI reports those)
                raise ValueError(f"augmentation field '{f.name}': expected a number, got {value!r}")  # noqa: TRY004
            object.__setattr__(self, f.name, float(value))
        for name in ("flip", "affine", "elastic", "grid", "intensity", "noise", "blur", "lowres"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augmentation field '{name}': {getattr(self, name)} must be a probability in [0, 1]")
        for name, top in (("shift", 0.5), ("scale", 0.9), ("rotate", 180.0), ("brightness", 1.0),
                          ("contrast", 1.0), ("gamma", 0.9), ("noise_std", 1.0)):
            if not 0 <= getattr(self, name) <= top:
                raise ValueError(f"augmentation field '{name}': {getattr(self, name)} must be in [0, {top}]")
        if not 0.5 <= self.blur_sigma <= 10:
            raise ValueError(f"augmentation field 'blur_sigma': {self.blur_sigma} must be in [0.5, 10]")
        if not 0.1 <= self.lowres_scale < 1:
            raise ValueError(f"augmentation field 'lowres_scale': {self.lowres_scale} must be in [0.1, 1)")

    @property
    def changes_intensity(self) -> bool:
        """Whether any step changes grey levels (the result is then clipped back to [0, 1])."""
        return self.intensity > 0 or self.noise > 0 or self.blur > 0 or self.lowres > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config field 'augmentation': unknown field(s) {unknown}; "
                             f"valid fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def build_pipeline(params: AugmentParams | None = None) -> A.Compose:
    """HorizontalFlip, Affine, elastic, grid distortion, then (when asked) noise, blur, brightness and
    contrast, low resolution, gamma."""
    a = params or AugmentParams()
    nearest, constant = cv2.INTER_NEAREST, cv2.BORDER_CONSTANT
    steps = [
        A.HorizontalFlip(p=a.flip),
        A.Affine(translate_percent=(-a.shift, a.shift), scale=(1 - a.scale, 1 + a.scale),
                 rotate=(-a.rotate, a.rotate), interpolation=cv2.INTER_LINEAR, mask_interpolation=nearest,
                 border_mode=constant, fill=0, fill_mask=0, p=a.affine),
        A.ElasticTransform(alpha=1, sigma=50, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=nearest, border_mode=constant, fill=0, fill_mask=0,
                           p=a.elastic),
        A.GridDistortion(num_steps=5, distort_limit=(-0.1, 0.1), interpolation=cv2.INTER_LINEAR,
                         mask_interpolation=nearest, border_mode=constant, fill=0, fill_mask=0,
                         p=a.grid),
    ]
    # nnU-Net's order: noise, blur, brightness and contrast, low resolution, gamma
    if a.noise > 0:
        steps.append(A.GaussNoise(std_range=(0.0, a.noise_std), p=a.noise))
    if a.blur > 0:
        steps.append(A.GaussianBlur(sigma_limit=(0.5, a.blur_sigma), p=a.blur))
    if a.intensity > 0 and (a.brightness > 0 or a.contrast > 0):
        steps.append(A.RandomBrightnessContrast(brightness_limit=(-a.brightness, a.brightness),
                                                contrast_limit=(-a.contrast, a.contrast), p=a.intensity))
    if a.lowres > 0:  # albumentations rounds the frame to 8 bits for this step (1/255 of the range)
        steps.append(A.Downscale(scale_range=(a.lowres_scale, 1.0), p=a.lowres,
                                 interpolation_pair={"downscale": cv2.INTER_NEAREST, "upscale": cv2.INTER_CUBIC}))
    if a.intensity > 0 and a.gamma > 0:
        steps.append(A.RandomGamma(gamma_limit=(100 * (1 - a.gamma), 100 * (1 + a.gamma)), p=a.intensity))
    return A.Compose(steps, mask_interpolation=nearest, seed=0)


# nnU-Net's 2D intensity augmentation (nnunetv2 get_training_transforms) on this module's [0, 1]
# frames: noise p 0.1 (nnU-Net: variance up to 0.1 of z-scored data, a std of 0.32 of the data's
# own; a preprocessed frame's std is about a third of its range, hence 0.1), blur p 0.2 with sigma
# 0.5-1, low resolution p 0.25 at 0.5-1, gamma 0.7-1.3 (nnU-Net: 0.7-1.5, p 0.3); brightness and
# contrast +-25 % (nnU-Net: p 0.15 each) share gamma's probability here, 0.3.
NNUNET_INTENSITY = {"noise": 0.1, "noise_std": 0.1, "blur": 0.2, "blur_sigma": 1.0, "lowres": 0.25,
                    "lowres_scale": 0.5, "intensity": 0.3, "brightness": 0.25, "contrast": 0.25, "gamma": 0.3}

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

    def __init__(self, params: AugmentParams | None = None) -> None:
        self.params = params or AugmentParams()
        self.pipeline = build_pipeline(self.params)
        self.clip = self.params.changes_intensity

    def __call__(self, image: np.ndarray, mask: np.ndarray, key: int) -> tuple[np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(key)
        out = self.pipeline(image=image, mask=mask)
        image = np.ascontiguousarray(out["image"], np.float32)
        if self.clip:  # noise, brightness, contrast and bicubic upscaling may leave the preprocessed [0, 1] range
            np.clip(image, 0.0, 1.0, out=image)
        return image, np.ascontiguousarray(out["mask"], np.uint8)


def offline_copies(images: np.ndarray, masks: np.ndarray, copies: int, seed: int,
                   params: AugmentParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The seed's offline augmentation: the frames plus ``copies`` fixed augmented copies of each.

    Args:
        images: float32 NxHxW; masks: uint8 NxHxW.
    Returns:
        arrays of N * (copies + 1) frames, originals first.
    """
    aug = Augmenter(params)
    out_images, out_masks = [images], [masks]
    for copy in range(copies):
        pairs = [aug(images[i], masks[i], sample_key(seed, OFFLINE, copy, i)) for i in range(len(images))]
        out_images.append(np.stack([p[0] for p in pairs]))
        out_masks.append(np.stack([p[1] for p in pairs]))
    return np.concatenate(out_images), np.concatenate(out_masks)
