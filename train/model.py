"""Named network configurations: MONAI's UNet, or its DynUNet (nnU-Net's network, optionally
with deep supervision). The configuration is stored in every checkpoint, so a checkpoint alone
rebuilds its model.

A DynUNet with deep supervision returns, in training mode, its main output and ``deep_supervision``
lower-resolution heads (upsampled to the input size) stacked as BxKxCxHxW, which the loss weighs
as nnU-Net does (losses.py); in evaluation mode it returns the main output alone, BxCxHxW, so
validation, evaluation and export see one output like any other network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from math import prod
from typing import Any

import torch
from monai.networks.layers import Norm
from monai.networks.nets import DynUNet, UNet

NORMS = {"batch": Norm.BATCH, "instance": Norm.INSTANCE}
ARCHS = ("unet", "dynunet")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "seed"
    arch: str = "unet"                  # unet (MONAI UNet) | dynunet (MONAI DynUNet, nnU-Net's network)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)
    num_res_units: int = 2              # UNet: residual units per level; DynUNet: > 0 for residual blocks
    deep_supervision: int = 0           # DynUNet only: extra output heads trained with nnU-Net's weights
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
        if self.arch not in ARCHS:
            raise ValueError(f"model field 'arch': {self.arch!r}; valid: {list(ARCHS)}")
        if self.deep_supervision and self.arch != "dynunet":
            raise ValueError("model field 'deep_supervision': only the 'dynunet' arch has deep supervision heads")
        if not 0 <= self.deep_supervision < len(self.strides):
            raise ValueError(f"model field 'deep_supervision': {self.deep_supervision} must be in "
                             f"[0, {len(self.strides) - 1}] (fewer than the {len(self.strides)} upsampling levels)")
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
    # nnU-Net's network (MONAI DynUNet: two 3x3 convolutions per level, instance norm, leaky ReLU,
    # transposed-convolution upsampling) at the plain network's size, with deep supervision on the
    # two decoder levels above the lowest (nnU-Net gives the lowest weight 0, so it is left out).
    "dynunet": ModelConfig(name="dynunet", arch="dynunet", channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                           num_res_units=0, deep_supervision=2, norm="instance", height=256, width=256),
    # Tests only: trains in seconds.
    "tiny": ModelConfig(name="tiny", channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                        height=64, width=80),
}


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model configuration {name!r}; valid: {sorted(MODEL_CONFIGS)}") from None


def describe_model(cfg: ModelConfig) -> str:
    """'wide UNet 16..256, 2 residual units, 256x256' or 'dyn DynUNet 16..256, deep supervision 2, 256x256'."""
    size = f"{cfg.height}x{cfg.width}"
    if cfg.arch == "dynunet":
        blocks = "residual blocks" if cfg.num_res_units else "plain blocks"
        return (f"{cfg.name} DynUNet {cfg.channels[0]}..{cfg.channels[-1]}, {blocks}, deep supervision "
                f"{cfg.deep_supervision}, {size}")
    return f"{cfg.name} UNet {cfg.channels[0]}..{cfg.channels[-1]}, {cfg.num_res_units} residual units, {size}"


def build_model(cfg: ModelConfig, num_classes: int) -> torch.nn.Module:
    """The network for ``cfg`` with one output channel per class (background included)."""
    if cfg.arch == "dynunet":
        levels = len(cfg.channels)
        norm = ("INSTANCE", {"affine": True}) if cfg.norm == "instance" else "BATCH"
        return DynUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, kernel_size=[3] * levels,
                       strides=[1, *cfg.strides], upsample_kernel_size=list(cfg.strides), filters=list(cfg.channels),
                       dropout=cfg.dropout or None, norm_name=norm, deep_supervision=cfg.deep_supervision > 0,
                       deep_supr_num=max(cfg.deep_supervision, 1), res_block=cfg.num_res_units > 0)
    return UNet(spatial_dims=2, in_channels=1, out_channels=num_classes, channels=cfg.channels,
                strides=cfg.strides, num_res_units=cfg.num_res_units, norm=NORMS[cfg.norm],
                dropout=cfg.dropout)
