"""Named MONAI UNet configurations. The configuration is stored in every checkpoint, so a
checkpoint alone rebuilds its model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from math import prod
from typing import Any

import torch
from monai.networks.layers import Norm
from monai.networks.nets import UNet

NORMS = {"batch": Norm.BATCH, "instance": Norm.INSTANCE}


@dataclass(frozen=True)
class ModelConfig:
    name: str = "seed"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0
    height: int = 480
    width: int = 640

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "strides", tuple(self.strides))
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"model field 'strides': needs len(channels) - 1 = {len(self.channels) - 1} "
                             f"entries, got {len(self.strides)}")
        if self.norm not in NORMS:
            raise ValueError(f"model field 'norm': {self.norm!r}; valid: {sorted(NORMS)}")
        step = prod(self.strides)
        if self.height % step or self.width % step:
            raise ValueError(f"model fields 'height'/'width': {self.height}x{self.width} must be divisible "
                             f"by the product of the strides ({step})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"], data["strides"] = list(self.channels), list(self.strides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**data)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # The seed's network (6.5 M parameters, 8.7 GFLOP per 480x640 frame).
    "seed": ModelConfig(),
    # A CPU-friendly variant: a quarter of the pixels, a quarter of the channels.
    "lite": ModelConfig(name="lite", channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2),
                        num_res_units=1, height=240, width=320),
    # The plain-script network of DESIGN.md's usgra-seg floor (16..256 channels, 2 residual units).
    "wide": ModelConfig(name="wide", channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                        num_res_units=2, height=256, width=256),
    # Tests only: trains in seconds.
    "tiny": ModelConfig(name="tiny", channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                        height=64, width=80),
}


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model configuration {name!r}; valid: {sorted(MODEL_CONFIGS)}") from None


def build_model(cfg: ModelConfig, num_classes: int) -> torch.nn.Module:
    """The MONAI UNet for ``cfg`` with one output channel per class (background included)."""
    return UNet(spatial_dims=2, in_channels=1, out_channels=num_classes, channels=cfg.channels,
                strides=cfg.strides, num_res_units=cfg.num_res_units, norm=NORMS[cfg.norm],
                dropout=cfg.dropout)
