"""The model contract: the one JSON document that travels inside every exported ONNX model.

Training writes it into the checkpoint, export copies it into ONNX ``metadata_props`` under
``usseg.contract``, and the runtime refuses a model whose contract is missing or malformed. Nothing
about a model (classes, input size, preprocessing, outputs) is hard-coded anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import UssegError
from .preprocess import Recipe

SCHEMA_VERSION = 1
METADATA_KEY = "usseg.contract"

SPINE_CLASSES = ("background", "MID", "VTB", "EPI")
OUTPUT_KINDS = ("logits", "probs", "labels")
RESIZE_POLICIES = ("letterbox",)
POSTPROCESS_KINDS = ("spine", "none")


class ContractError(UssegError, ValueError):
    """A contract that is missing, malformed or of an unknown schema version."""


@dataclass(frozen=True)
class InputSpec:
    """What the graph's input tensor looks like."""

    name: str = "image"
    layout: str = "NCHW"
    dtype: str = "float32"
    channels: int = 1
    height: int = 480
    width: int = 640
    batch: int | None = 1  # None = dynamic


@dataclass(frozen=True)
class FrameSpec:
    """Set when the preprocessing is part of the graph: the graph then takes the raw 8-bit grey
    frame [N, 1, height, width] (uint8) of this one size, and ``input`` describes the tensor that
    the network inside receives."""

    name: str = "frame"
    dtype: str = "uint8"
    height: int = 480
    width: int = 640


@dataclass(frozen=True)
class PostprocessSpec:
    """Parameters of the seed's rule-based post-processing (see runtime/postprocess.py)."""

    kind: str = "spine"
    min_line_area: int = 500
    min_box_area: int = 500
    gap_kernel: int = 5
    gap_iterations: int = 3
    line_thickness_px: int = 10


@dataclass(frozen=True)
class Contract:
    classes: tuple[str, ...]
    input: InputSpec
    recipe: Recipe
    resize: str = "letterbox"
    output: str = "logits"
    output_name: str = "output"
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    frame: FrameSpec | None = None  # None: the caller preprocesses (usseg.runtime.preprocess)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "Contract":
        if not isinstance(data, dict):
            raise ContractError(f"contract: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ContractError(
                f"contract field 'schema_version': {version!r} is not supported (this usseg reads {SCHEMA_VERSION})"
            )
        _check_keys("contract", data, cls)
        try:
            return cls(
                classes=tuple(_require(data, "classes", list)),
                input=_build("input", InputSpec, _require(data, "input", dict)),
                recipe=Recipe.from_dict(_require(data, "recipe", dict)),
                resize=_require(data, "resize", str),
                output=_require(data, "output", str),
                output_name=data.get("output_name", "output"),
                postprocess=_build("postprocess", PostprocessSpec, data.get("postprocess", {})),
                provenance=dict(data.get("provenance", {})),
                schema_version=version,
                frame=None if data.get("frame") is None else _build("frame", FrameSpec, data["frame"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"contract: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "Contract":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"contract: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _require(data: dict, key: str, kind: type) -> Any:
    if key not in data:
        raise ContractError(f"contract field '{key}' is missing")
    if not isinstance(data[key], kind):
        raise ContractError(f"contract field '{key}': expected {kind.__name__}, got {type(data[key]).__name__}")
    return data[key]


def _check_keys(where: str, data: dict, cls: type) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(known)}")


def _build(where: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"contract field '{where}': expected an object")
    _check_keys(f"contract field '{where}'", data, cls)
    return cls(**data)


def validate(c: Contract) -> None:
    """Raise ContractError naming the first field that makes no sense."""
    if len(c.classes) < 2 or not all(isinstance(n, str) and n for n in c.classes):
        raise ContractError("contract field 'classes': need >= 2 non-empty names, background first")
    if len(set(c.classes)) != len(c.classes):
        raise ContractError(f"contract field 'classes': duplicate names in {list(c.classes)}")
    spec = c.input
    if spec.layout != "NCHW" or spec.dtype != "float32" or spec.channels != 1:
        raise ContractError("contract field 'input': only NCHW float32 with 1 channel is supported")
    if spec.height < 8 or spec.width < 8:
        raise ContractError(f"contract field 'input': size {spec.height}x{spec.width} is too small")
    if spec.batch is not None and spec.batch < 1:
        raise ContractError(f"contract field 'input.batch': {spec.batch} must be >= 1 or null")
    if c.resize not in RESIZE_POLICIES:
        raise ContractError(f"contract field 'resize': {c.resize!r}; valid: {list(RESIZE_POLICIES)}")
    if c.output not in OUTPUT_KINDS:
        raise ContractError(f"contract field 'output': {c.output!r}; valid: {list(OUTPUT_KINDS)}")
    if c.postprocess.kind not in POSTPROCESS_KINDS:
        raise ContractError(
            f"contract field 'postprocess.kind': {c.postprocess.kind!r}; valid: {list(POSTPROCESS_KINDS)}"
        )
    if c.frame is not None:
        f = c.frame
        if f.dtype != "uint8" or not isinstance(f.name, str) or not f.name:
            raise ContractError("contract field 'frame': only a named uint8 frame input is supported")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in (f.height, f.width)):
            raise ContractError(f"contract field 'frame': height and width must be integers >= 8, "
                                f"got {f.height!r} x {f.width!r}")
        if f.height < spec.height and f.width < spec.width:
            raise ContractError(f"contract field 'frame': {f.height}x{f.width} frames would be enlarged to the "
                                f"{spec.height}x{spec.width} input; in-graph preprocessing only shrinks")
    if c.postprocess.kind == "spine" and tuple(c.classes) != SPINE_CLASSES:
        raise ContractError(f"contract field 'postprocess.kind': 'spine' needs classes {list(SPINE_CLASSES)}")


def default_postprocess(classes: tuple[str, ...]) -> PostprocessSpec:
    """The seed's rules for the spine classes, plain label maps for any other class set."""
    return PostprocessSpec() if tuple(classes) == SPINE_CLASSES else PostprocessSpec(kind="none")
