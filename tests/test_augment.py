"""nnU-Net's intensity augmentation (noise, blur, low resolution, gamma): deterministic for a key,
each step doing what it says on the grey levels only, the result kept in [0, 1]."""

import cv2
import numpy as np
import pytest

from usseg.train.augment import NNUNET_INTENSITY, Augmenter, AugmentParams

NO_SPATIAL = {"flip": 0.0, "affine": 0.0, "elastic": 0.0, "grid": 0.0}


def frame():
    """A 32x48 frame: a bright box on a dark, textured background, and its mask."""
    mask = np.zeros((32, 48), np.uint8)
    cv2.rectangle(mask, (12, 8), (36, 22), 1, -1)
    rng = np.random.default_rng(0)
    image = (0.2 + 0.6 * mask + rng.normal(0, 0.05, mask.shape)).clip(0, 1).astype(np.float32)
    return image, mask


def test_nnunet_set_is_deterministic_for_a_key_and_keeps_the_range():
    image, mask = frame()
    aug = Augmenter(AugmentParams(**{**NNUNET_INTENSITY, "noise": 1.0, "blur": 1.0, "lowres": 1.0}))
    outputs = [aug(image, mask, key) for key in (3, 3, 4)]
    assert np.array_equal(outputs[0][0], outputs[1][0]) and np.array_equal(outputs[0][1], outputs[1][1])
    assert not np.array_equal(outputs[0][0], outputs[2][0])  # another key, other draws
    for out, out_mask in outputs:
        assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
        assert set(np.unique(out_mask)) <= {0, 1}


@pytest.mark.parametrize("step, check", [
    # noise with std up to 0.2 of the range: a flat frame gets a spread of grey levels
    ({"noise": 1.0, "noise_std": 0.2}, lambda src, out: 0.0 < (out - src)[src == 0.5].std() <= 0.2),
    # blur: the box's edge is spread out, so the frame has less contrast between neighbours
    ({"blur": 1.0, "blur_sigma": 2.0}, lambda src, out: np.abs(np.diff(out, axis=1)).mean()
     < np.abs(np.diff(src, axis=1)).mean()),
    # low resolution at 0.25-0.5: down with nearest neighbour, up bicubic, so fine texture is lost
    ({"lowres": 1.0, "lowres_scale": 0.25}, lambda src, out: 0.005 < np.abs(out - src).mean()),
    # gamma 0.7-1.3: monotone, so the box stays brighter than the background
    ({"intensity": 1.0, "gamma": 0.3}, lambda src, out: out[10:20, 15:30].mean() > out[26:, :].mean()),
])
def test_each_intensity_step_changes_grey_levels_not_the_mask(step, check):
    image, mask = frame()
    src = np.where(mask > 0, image, 0.5).astype(np.float32) if "noise" in step else image
    aug = Augmenter(AugmentParams(**NO_SPATIAL, **step))
    changed = 0
    for key in range(5):
        out, out_mask = aug(src, mask, key)
        assert np.array_equal(out_mask, mask)  # intensity steps never move the labels
        assert check(src, out)
        changed += not np.array_equal(out, src)
    assert changed == 5


@pytest.mark.parametrize("field, value, message", [
    ("noise", 1.5, "probability"),           # a probability above 1
    ("noise_std", -0.1, r"in \[0, 1.0\]"),   # a negative spread
    ("blur_sigma", 0.2, r"\[0.5, 10\]"),     # below the smallest sigma drawn
    ("lowres_scale", 1.0, r"\[0.1, 1\)"),    # no reduction at all
])
def test_bad_strengths_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"augmentation field '{field}'.*{message}"):
        AugmentParams(**{field: value})


def test_defaults_leave_the_nnunet_steps_off():
    params = AugmentParams()
    assert (params.noise, params.blur, params.lowres) == (0.0, 0.0, 0.0) and not params.changes_intensity
