"""The seed-style pipeline, timed beside usseg in the same run on the same machine.

It does what the seed's inference script does (FACTS.md), with its bugs fixed only where they
would change the work done: the enhancement runs on every frame (not half of them).
  - cv2 NLM -> CLAHE -> unsharp on the native frame, min-max, symmetric pad/crop to the network's
    input size (480x640 for the seed's network);
  - PyTorch eager MONAI UNet, fp32, softmax + argmax, on the CPU or the GPU (``device``, with
    synchronisation before the labels are read, which the seed's timing lacked);
  - cv2 + scikit-image post-processing (reference_postprocess).
"""

from __future__ import annotations

import numpy as np
import torch

from usseg.runtime.contract import PostprocessSpec
from usseg.runtime.preprocess import Recipe, enhance, get_recipe, minmax, to_grey8

from .reference_postprocess import reference_postprocess

SEED_H, SEED_W = 480, 640
SEED_HEADLINE_MS = 70.0  # "0.07 s/image on a GTX 1050 Ti", the seed README's figure


def pad_or_crop(img: np.ndarray, height: int = SEED_H, width: int = SEED_W) -> np.ndarray:
    """Symmetric zero padding or centre crop to height x width, without rescaling (the seed's way)."""
    out = np.zeros((height, width), img.dtype)
    h, w = img.shape
    sy, sx = max(0, (h - height) // 2), max(0, (w - width) // 2)
    dy, dx = max(0, (height - h) // 2), max(0, (width - w) // 2)
    ch, cw = min(h, height), min(w, width)
    out[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    return out


class SeedStylePipeline:
    """``model`` takes [1, 1, height, width]; ``recipe`` and ``spec`` are the model's (the seed's by
    default), so that a model trained with another recipe is compared like for like."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", height: int = SEED_H, width: int = SEED_W,
                 spec: PostprocessSpec | None = None, recipe: Recipe | str = "seed") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.height, self.width = height, width
        self.recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
        self.spec = spec or PostprocessSpec()

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        img = minmax(enhance(to_grey8(frame), self.recipe))
        return torch.from_numpy(pad_or_crop(img, self.height, self.width))[None, None].to(self.device)

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(self.model(x), dim=1)
        labels = torch.argmax(probs, dim=1)[0]
        if self.device != "cpu":
            torch.cuda.synchronize(self.device)
        return labels.to(torch.uint8).cpu().numpy()

    def postprocess(self, labels: np.ndarray):
        return reference_postprocess(labels, self.spec)

    def __call__(self, frame: np.ndarray):
        return self.postprocess(self.infer(self.preprocess(frame)))
