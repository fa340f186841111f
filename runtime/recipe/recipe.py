"""The recipe as stored in a model's contract and named in training configs, and its steps.

A recipe is a flat record (the format every exported contract holds): a name, which denoiser
runs, on/off switches and every step's parameters. :attr:`Recipe.steps` turns it into the ordered
list of step objects that the host path (``enhance``) and the ONNX graph both iterate; the
min-max scaling to [0, 1] always follows them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any

from .clahe import Clahe
from .denoise import BilateralDenoise, MedianDenoise, NlmDenoise
from .fields import Choice, Flag, Label, checked, param
from .step import Denoiser, Step
from .unsharp import Unsharp

# Every step in the order it runs; a recipe runs those its fields enable.
STEPS: tuple[type[Step], ...] = (NlmDenoise, BilateralDenoise, MedianDenoise, Clahe, Unsharp)
DENOISERS = tuple(s.denoise for s in STEPS if issubclass(s, Denoiser)) + ("none",)


@dataclass(frozen=True)
class Recipe:
    """A named, fully parameterised chain on 8-bit grey; every field is checked on construction
    (a RecipeError names the first bad one), the parameters of steps it does not run included."""

    name: str = param(Label(), "seed")
    denoise: str = param(Choice(DENOISERS), "nlm")
    nlm_h: float = 5.0
    nlm_template: int = 7
    nlm_search: int = 21
    bilateral_d: int = 5
    bilateral_sigma: float = 25.0
    median_ksize: int = 3
    clahe: bool = param(Flag(), True)
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    unsharp: bool = param(Flag(), True)
    unsharp_amount: float = 1.5
    unsharp_sigma: float = 3.0

    def __post_init__(self) -> None:
        checked(self)
        for step in STEPS:
            built = step.of(self)
            for key in step.field_names():  # keep the checked values (an nlm_h of 5 becomes 5.0)
                object.__setattr__(self, key, getattr(built, key))

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """The steps this recipe runs, in order (8-bit grey in and out)."""
        return tuple(step.of(self) for step in STEPS if step.enabled(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if not isinstance(data, dict):
            raise TypeError(f"recipe: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "seed": Recipe(),
    "none": Recipe(name="none", denoise="none", clahe=False, unsharp=False),
    # Cheaper denoisers, kept for the ablation and the real-time profile.
    "nlm-small": Recipe(name="nlm-small", nlm_template=5, nlm_search=11),
    "bilateral": Recipe(name="bilateral", denoise="bilateral"),
    "median": Recipe(name="median", denoise="median"),
    # The ablation (docs/ablation.md): each step of the seed recipe switched off on its own
    # (``realtime`` below is the seed recipe without its denoiser), and smaller NLM windows.
    "no-clahe": Recipe(name="no-clahe", clahe=False),
    "no-unsharp": Recipe(name="no-unsharp", unsharp=False),
    "nlm-tiny": Recipe(name="nlm-tiny", nlm_template=3, nlm_search=7),
    # The real-time profile's recipe (configs/realtime.json): no denoiser, CLAHE and unsharp kept.
    "realtime": Recipe(name="realtime", denoise="none"),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; valid recipes are {sorted(RECIPES)}") from None


def with_overrides(recipe: Recipe, **changes: Any) -> Recipe:
    return replace(recipe, **changes)
