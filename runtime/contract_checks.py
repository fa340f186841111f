"""Checking the fields of the contract's dataclasses: every value against its type annotation,
then against a table of range rules, with the field named in the error. A model file is
untrusted input; these checks stand between its JSON and everything that uses it."""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from .errors import UssegError


class ContractError(UssegError, ValueError):
    """A contract that is missing, malformed or of an unknown schema version."""


# -- type checks by annotation ------------------------------------------------------------------

def clip(text: str, longest: int = 60) -> str:
    return text if len(text) <= longest else text[:longest - 3] + "..."


def show(value: Any) -> str:
    """A value from an untrusted file, shown in a message at bounded length."""
    return clip(repr(value))


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _matches(value: Any, kind: Any) -> bool:
    """int means int (not bool); float accepts int but not bool, NaN or infinity."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if _is_union(kind):
        return any(_matches(value, k) for k in args)
    if origin in (tuple, list):
        return isinstance(value, (tuple, list)) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1])
                                               for k, v in value.items())
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return isinstance(value, int) or math.isfinite(value)
    if isinstance(kind, type):
        return isinstance(value, kind)
    raise TypeError(f"no type check for the annotation {kind!r}")


_WORDS = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false",
          type(None): "null"}


def _describe(kind: Any) -> str:
    if _is_union(kind):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) in (tuple, list):
        return f"a list of ({_describe(typing.get_args(kind)[0])})"
    if typing.get_origin(kind) is dict:
        return "an object"
    return _WORDS.get(kind, f"a {getattr(kind, '__name__', kind)}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_name(where: str, name: str) -> str:
    return f"contract field '{where}.{name}'" if where else f"contract field '{name}'"


def check_types(where: str, values: dict[str, Any], cls: type) -> None:
    """Raise ContractError naming the first of ``values`` that does not match its annotation in
    the dataclass ``cls`` (names that ``cls`` does not have are left to the key check)."""
    hints = _hints(cls)
    for name, value in values.items():
        kind = hints.get(name, Any)
        if typing.get_origin(kind) in (tuple, list) and isinstance(value, (tuple, list)):
            name, kind, value = _first_bad_item(name, kind, value)
        if not _matches(value, kind):
            raise ContractError(f"{field_name(where, name)}: expected {_describe(kind)}, "
                                f"got {type(value).__name__} {show(value)}")


def _first_bad_item(name: str, kind: Any, items: tuple | list) -> tuple[str, Any, Any]:
    """Point at the first item of a list that is not of the list's item type."""
    item_kind = typing.get_args(kind)[0]
    for i, item in enumerate(items):
        if not _matches(item, item_kind):
            return f"{name}[{i}]", item_kind, item
    return name, kind, items


# -- range rules: one table per spec ------------------------------------------------------------

@dataclass(frozen=True)
class Between:
    """An integer in [lo, hi] (odd if asked); None passes (the type check decides about None)."""

    lo: int
    hi: int
    odd: bool = False

    def problem(self, value: Any) -> str | None:
        if value is None or (self.lo <= value <= self.hi and (value % 2 == 1 or not self.odd)):
            return None
        return f"{show(value)} must be {'an odd' if self.odd else 'an'} integer in [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class OneOf:
    choices: tuple

    def problem(self, value: Any) -> str | None:
        if any(value == c and type(value) is type(c) for c in self.choices):
            return None
        return f"{show(value)}; valid: {json.dumps(list(self.choices))}"


@dataclass(frozen=True)
class Text:
    """Printable text of bounded length; ``pattern`` (a full match) narrows it further."""

    max_len: int = 128
    pattern: str | None = None
    words: str = "printable characters"

    def problem(self, value: Any) -> str | None:
        ok = 0 < len(value) <= self.max_len and value.isprintable()
        if ok and (self.pattern is None or re.fullmatch(self.pattern, value)):
            return None
        return f"{show(value)} must be 1 to {self.max_len} {self.words}"


def field_values(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def check_spec(where: str, obj: Any, rules: dict[str, Any]) -> None:
    """Type-check every field of the dataclass ``obj``, then apply its range ``rules``."""
    values = field_values(obj)
    check_types(where, values, type(obj))
    for name, rule in rules.items():
        problem = rule.problem(values[name])
        if problem:
            raise ContractError(f"{field_name(where, name)}: {problem}")
