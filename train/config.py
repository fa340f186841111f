"""Training configuration: one frozen dataclass, named profiles, JSON files and CLI overrides.

Precedence, lowest first: the profile, then the ``--config`` file, then explicit CLI flags.
Every run writes the configuration it used to ``RUN/config.json``, which loads back with
``--config``. A plan (``usseg plan``, plan.py) is such a file with two more keys, ``reasons`` and
``plan``, that say why each value was chosen; they are read past, not applied.

The built-in profiles live here only (``PROFILES``); ``configs/`` holds configurations that are
not profiles.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from usseg.runtime.preprocess import Recipe, get_recipe
from usseg.runtime.providers import DEVICE_KINDS

from .augment import AugmentParams
from .model import ModelConfig, get_model_config
from .schedule import SCHEDULES

# The runtime's device kinds that training can use: TensorRT runs exported models, not PyTorch.
DEVICES = tuple(kind for kind in DEVICE_KINDS if kind != "tensorrt")


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict[str, Any]": (dict,)}


def _check_types(cfg: Any, where: str) -> None:
    """JSON and the CLI give plain values: check each against its field's type (an int is a
    valid float; a bool, though an int to Python, is not a valid int)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        allowed = _TYPES[str(f.type)]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"{where} field '{f.name}': expected {f.type}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (data and output folders aside)."""

    model: str = "lite"                      # a name in usseg.train.model.MODEL_CONFIGS
    model_overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields to change
    recipe: str = "seed"                     # a name in usseg.runtime.preprocess.RECIPES
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    schedule: str = "none"                   # none | cosine | poly (stepped once per epoch)
    val_every: int = 1                       # validate every k epochs (and after the last)
    patience: int = 0                        # early stop after this many validations without gain; 0 = off
    patience_start: float = 0.0              # no early stop before this fraction of the epochs
    seed: int = 0
    num_workers: int = 0                     # DataLoader worker processes
    augment: bool = True                     # augmentation on (strengths: ``augmentation``)
    augmentation: dict[str, Any] = field(default_factory=dict)  # AugmentParams fields to change
    offline_copies: int = 0                  # > 0: that many fixed augmented copies per frame, made once
    hd_start: float = 0.2                    # fraction of the epochs where the HD weight starts rising
    hd_end: float = 0.6                      # fraction where it reaches hd_max
    hd_max: float = 0.0                      # HausdorffDT weight at the end; 0 = DiceCE only (default)
    hd_cap: float = 0.5                      # the HD term is scaled down to at most hd_cap x the DiceCE term
    hd_guard: float = 0.05                   # HD switched off when mean val Dice falls this far below its best
    ema: float = 0.0                         # decay per step of the weight average that is validated and
                                             # saved (ema.py); 0 = the trained weights themselves
    val_fraction: float = 0.1                # val part taken out of train when the data set has none
    amp: bool = True                         # mixed precision, CUDA only
    device: str = "auto"                     # auto | cpu | cuda

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        object.__setattr__(self, "augmentation", dict(self.augmentation))
        _check_types(self, "train config")
        self.model_config()  # names a bad model name or override
        self.augment_params()
        get_recipe(self.recipe)
        for name, ok, rule in (
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("val_every", self.val_every >= 1, ">= 1"),
            ("patience", self.patience >= 0, ">= 0"),
            ("patience_start", 0 <= self.patience_start < 1, "in [0, 1)"),
            ("seed", self.seed >= 0, ">= 0"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("offline_copies", self.offline_copies >= 0, ">= 0"),
            ("hd_start", 0 <= self.hd_start <= self.hd_end, "in [0, hd_end]"),
            ("hd_end", self.hd_start <= self.hd_end <= 1, "in [hd_start, 1]"),
            ("hd_max", 0 <= self.hd_max <= 1, "in [0, 1]"),
            ("hd_cap", self.hd_cap > 0, "> 0"),
            ("hd_guard", 0 <= self.hd_guard <= 1, "in [0, 1]"),
            ("ema", 0 <= self.ema < 1, "in [0, 1)"),
            ("val_fraction", 0 < self.val_fraction < 1, "in (0, 1)"),
            ("schedule", self.schedule in SCHEDULES, f"one of {list(SCHEDULES)}"),
            ("device", self.device in DEVICES, f"one of {list(DEVICES)}"),
        ):
            if not ok:
                raise ValueError(f"train config field '{name}': {getattr(self, name)!r} must be {rule}")
        if self.offline_copies and not self.augment:
            raise ValueError("train config fields 'offline_copies' and 'augment': copies need augment = true")

    def model_config(self) -> ModelConfig:
        """The named model configuration with the overrides applied."""
        base = get_model_config(self.model).to_dict()
        unknown = sorted(set(self.model_overrides) - set(base))
        if unknown:
            raise ValueError(f"train config field 'model_overrides': unknown field(s) {unknown}; "
                             f"valid fields are {sorted(base)}")
        return ModelConfig.from_dict({**base, **self.model_overrides})

    def augment_params(self) -> AugmentParams:
        """The augmentation strengths: AugmentParams defaults with ``augmentation`` applied."""
        return AugmentParams.from_dict(self.augmentation)

    def recipe_spec(self) -> Recipe:
        return get_recipe(self.recipe)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, TrainConfig] = {
    # CPU-friendly, tuned on the 70-frame 480x640 phantom (2 cores: about 5 min, test mean Dice
    # 0.88). The lite network at 240x320 beat 192x256 (MID 0.81 vs 0.80, mean 0.88 vs 0.85);
    # loader workers slowed it down on 2 cores (2.8 s/epoch with none, 3.8 s with one). The
    # phantom's thin structures train well with the HausdorffDT blend, so it stays on here.
    "demo": TrainConfig(model="lite", recipe="seed", epochs=100, batch_size=4, schedule="cosine",
                        val_every=5, num_workers=0, hd_max=0.2),
    # The seed's recipe: its 480x640 UNet, batch 2, 500 epochs, validation every 5, 7 offline
    # copies, DiceCE with HausdorffDT blended in from 20 % to 60 % of the epochs up to 0.2.
    "seed": TrainConfig(model="seed", recipe="seed", epochs=500, batch_size=2, schedule="none",
                        val_every=5, offline_copies=7, num_workers=2, hd_max=0.2),
    # DESIGN.md's plain script, the floor every default must clear: MONAI UNet 16..256, 2 residual
    # units, 256x256 letterboxed, min-max only, DiceCE, Adam 1e-3 at a constant rate, horizontal
    # flips, batch 8, no boundary loss (on usgra-seg: 125 epochs in 20 min on 2 CPU cores, test 0.597).
    # The trials of a budgeted run always try it (candidates.py).
    "plain": TrainConfig(model="wide", recipe="none", epochs=125, batch_size=8, lr=1e-3, schedule="none",
                         val_every=5, augment=True, augmentation={"flip": 0.5, "affine": 0.0, "elastic": 0.0, "grid": 0.0},
                         hd_max=0.0),
    # Tests: a 64x80 network that trains in seconds.
    "tiny": TrainConfig(model="tiny", recipe="none", epochs=3, batch_size=4, val_every=1),
}


def get_profile(name: str) -> TrainConfig:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid profiles are {sorted(PROFILES)}") from None


PLAN_KEYS = ("reasons", "plan")  # in a plan file: why each value was chosen, and what it was made from


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON config file (or a plan); errors name the file and the offending key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of train config fields")  # noqa: TRY004  (a config error)
    data = {k: v for k, v in data.items() if k not in PLAN_KEYS}
    try:
        check_keys(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return data


def check_keys(data: dict[str, Any]) -> None:
    valid = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; valid keys are {valid}")


def resolve_config(profile: str | TrainConfig = "demo", file: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Profile, then file, then overrides (``None`` values in ``overrides`` are ignored)."""
    cfg = get_profile(profile) if isinstance(profile, str) else profile
    if file is not None:
        data = read_config_file(file)
        try:
            cfg = replace(cfg, **data)
        except ValueError as exc:
            raise ValueError(f"{file}: {exc}") from None
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(changes)
    return replace(cfg, **changes)
