"""Type and range checks for recipe fields, so that no value OpenCV cannot take ever reaches it.

A recipe comes from a model's contract or a training config, i.e. from a file: a search window of
100001 makes ``cv2.fastNlMeansDenoising`` exhaust memory and crash the process, a negative sigma
or a string gives a raw cv2 traceback. Each check returns the value normalised (``int`` or
``float``) or raises :class:`RecipeError` naming the field. Bools are not numbers here, and NaN
and infinities are never in range.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UssegError


class RecipeError(UssegError, ValueError):
    """A recipe field of the wrong type or out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"recipe field '{field_name}': {message}")
        self.field = field_name


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Integer:
    """An integer in [lo, hi]; with ``odd``, only odd ones (OpenCV's window sizes)."""

    lo: int
    hi: int
    odd: bool = False

    def __call__(self, name: str, value: Any) -> int:
        kind = "an odd integer" if self.odd else "an integer"
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not ok or not self.lo <= value <= self.hi or (self.odd and value % 2 == 0):
            raise RecipeError(name, f"{_shown(value)} must be {kind} in [{self.lo}, {self.hi}]")
        return int(value)


@dataclass(frozen=True)
class Real:
    """A finite number in [lo, hi], or in (lo, hi] with ``above``; integers are accepted."""

    lo: float
    hi: float
    above: bool = False

    def __call__(self, name: str, value: Any) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > self.lo if self.above else value >= self.lo) and value <= self.hi
        if not ok:
            low = "(" if self.above else "["
            raise RecipeError(name, f"{_shown(value)} must be a number in {low}{self.lo:g}, {self.hi:g}]")
        return float(value)


@dataclass(frozen=True)
class Flag:
    """true or false (a 0 or 1 is refused: it is usually a number put in the wrong field)."""

    def __call__(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise RecipeError(name, f"{_shown(value)} must be true or false")
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise RecipeError(name, f"{_shown(value)}; valid: {list(self.options)}")
        return value


@dataclass(frozen=True)
class Label:
    """A non-empty name of at most ``longest`` characters (it is only a label)."""

    longest: int = 100

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > self.longest:
            raise RecipeError(name, f"{_shown(value)} must be a non-empty text of at most {self.longest} characters")
        return value


def param(check: Any, default: Any = None) -> Any:
    """A dataclass field whose value ``check`` validates (see :func:`checked`)."""
    if default is None:
        return field(metadata={"check": check})
    return field(default=default, metadata={"check": check})


def checked(obj: Any) -> None:
    """Run each field's check on a frozen dataclass and store the normalised values."""
    for f in fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            object.__setattr__(obj, f.name, check(f.name, getattr(obj, f.name)))
