"""The shape of a recipe step: parameters with their checks, the OpenCV form and the ONNX form.

A step is one 8-bit grey -> 8-bit grey stage. Its dataclass fields carry the recipe fields' own
names, so a bad value is reported under the name the contract and the config use. ``host`` is
what training and the runtime run; ``graph`` adds the same arithmetic as ONNX operators to a
:class:`usseg.runtime.recipe.graph.GraphBuilder` (only ``usseg-export --graph-preprocess`` and the
graph checks build graphs, so nothing here imports onnx). A step whose OpenCV arithmetic has no
exact ONNX form sets ``in_graph = False``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import UssegError
from .fields import checked

if TYPE_CHECKING:
    from .graph import GraphBuilder


class GraphRecipeError(UssegError, ValueError):
    """A recipe or frame size that the in-graph preprocessing cannot express."""


@dataclass(frozen=True)
class Step:
    """Base of every recipe step; subclasses declare their fields with :func:`fields.param`."""

    title: ClassVar[str] = "step"
    in_graph: ClassVar[bool] = True

    def __post_init__(self) -> None:
        checked(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, recipe: Any) -> Step:
        """This step with the recipe's values (checked: a bad one raises RecipeError naming it)."""
        return cls(**{name: getattr(recipe, name) for name in cls.field_names()})

    @classmethod
    def enabled(cls, recipe: Any) -> bool:
        """Whether ``recipe`` runs this step."""
        raise NotImplementedError

    def host(self, img: np.ndarray) -> np.ndarray:
        """The OpenCV form on contiguous 8-bit grey."""
        raise NotImplementedError

    def graph(self, g: GraphBuilder, x: str, height: int, width: int) -> str:
        """The ONNX form: float32 [N, 1, height, width] of integer grey levels in, the same out."""
        raise GraphRecipeError(f"{self.title} has no in-graph form")


@dataclass(frozen=True)
class Denoiser(Step):
    """A step chosen by the recipe's ``denoise`` field (at most one runs)."""

    denoise: ClassVar[str] = ""

    @classmethod
    def enabled(cls, recipe: Any) -> bool:
        return recipe.denoise == cls.denoise
