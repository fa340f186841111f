"""The model contract: the one JSON document that travels inside every exported ONNX model.

Training writes it into the checkpoint, export copies it into ONNX ``metadata_props`` under
``usseg.contract``, and the runtime refuses a model whose contract is missing or malformed. Nothing
about a model (classes, input size, preprocessing, outputs) is hard-coded anywhere else.

A model file is untrusted input: every field is type-checked against its annotation and
range-checked against the tables below when it is read, so that no value from a model file reaches
OpenCV, Numba, a buffer allocation or a file path unchecked. Errors name the field
(``contract field 'postprocess.gap_iterations': 1000000000 must be an integer in [0, 20]``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .contract_checks import (  # noqa: F401  (ContractError is imported from here)
    Between,
    ContractError,
    OneOf,
    Text,
    check_spec,
    check_types,
    clip,
    field_values,
    show,
)
from .preprocess import Recipe

SCHEMA_VERSION = 1
METADATA_KEY = "usseg.contract"

SPINE_CLASSES = ("background", "MID", "VTB", "EPI")
OUTPUT_KINDS = ("logits", "probs", "labels")
RESIZE_POLICIES = ("letterbox",)
POSTPROCESS_KINDS = ("spine", "none")

MAX_CONTRACT_CHARS = 1 << 20  # the whole JSON document
MAX_SIDE = 16384  # input and frame height / width
MAX_SCORES = 1 << 28  # classes x height x width: the score buffer stays <= 1 GiB of float32
MAX_AREA = MAX_SIDE * MAX_SIDE  # area thresholds in pixels
MAX_PROVENANCE_CHARS = 1 << 16
MAX_PROVENANCE_DEPTH = 8


TENSOR_NAME = Text(256)
# Class names become file names and JSON keys: letters, digits and " _.+()-", no path characters,
# starting with a letter or digit and not ending in a dot or a space.
CLASS_NAME = Text(64, r"[^\W_][\w .+()-]*(?<![ .])", "characters: letters, digits, ' _.+()-', "
                  "starting with a letter or digit, not ending in '.' or ' '")

INPUT_RULES = {
    "name": TENSOR_NAME, "layout": OneOf(("NCHW",)), "dtype": OneOf(("float32",)),
    "channels": OneOf((1,)), "height": Between(8, MAX_SIDE), "width": Between(8, MAX_SIDE),
    # The runtime sends one frame at a time, or a whole batch to a dynamic-batch graph.
    "batch": OneOf((1, None)),
}
FRAME_RULES = {
    "name": TENSOR_NAME, "dtype": OneOf(("uint8",)),
    "height": Between(8, MAX_SIDE), "width": Between(8, MAX_SIDE),
}
# Kernel sizes and iteration counts bound the work cv2.dilate and the Numba kernels do per frame.
POSTPROCESS_RULES = {
    "kind": OneOf(POSTPROCESS_KINDS), "min_line_area": Between(0, MAX_AREA),
    "min_box_area": Between(0, MAX_AREA), "gap_kernel": Between(1, 31, odd=True),
    "gap_iterations": Between(0, 20), "line_thickness_px": Between(1, 100),
    "morph_iterations": Between(0, 20), "hough_threshold": Between(1, 100_000), "hough_min_length": Between(0, 100_000),
    "hough_max_gap": Between(0, 100_000),
}
CLEANUP_FIELDS = ("largest_component", "fill_holes")  # class names; checked against the classes in validate()
CONTRACT_RULES = {
    "resize": OneOf(RESIZE_POLICIES), "output": OneOf(OUTPUT_KINDS), "output_name": TENSOR_NAME,
    "schema_version": OneOf((SCHEMA_VERSION,)),
}



# -- the contract -------------------------------------------------------------------------------

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

    def __post_init__(self) -> None:
        check_spec("input", self, INPUT_RULES)


@dataclass(frozen=True)
class FrameSpec:
    """Set when the preprocessing is part of the graph: the graph then takes the raw 8-bit grey
    frame [N, 1, height, width] (uint8) of this one size, and ``input`` describes the tensor that
    the network inside receives."""

    name: str = "frame"
    dtype: str = "uint8"
    height: int = 480
    width: int = 640

    def __post_init__(self) -> None:
        check_spec("frame", self, FRAME_RULES)


@dataclass(frozen=True)
class PostprocessSpec:
    """Parameters of the seed's rule-based post-processing (see runtime/postprocess/), and the
    label-map clean-up chosen on val for any kind (runtime/cleanup.py; empty: none, as in every
    contract written before it existed)."""

    kind: str = "spine"
    min_line_area: int = 500
    min_box_area: int = 500
    gap_kernel: int = 5
    gap_iterations: int = 3
    line_thickness_px: int = 10
    morph_iterations: int = 2       # open, then close, with a 3x3 kernel before a line is fitted
    hough_threshold: int = 30       # cv2.HoughLinesP's votes, minLineLength and maxLineGap
    hough_min_length: int = 5
    hough_max_gap: int = 30
    largest_component: tuple[str, ...] = ()  # classes that keep only their largest connected region
    fill_holes: tuple[str, ...] = ()         # classes whose enclosed background becomes the class

    def __post_init__(self) -> None:
        check_spec("postprocess", self, POSTPROCESS_RULES)
        for name in CLEANUP_FIELDS:  # JSON gives lists; a frozen spec holds tuples (hashable, comparable)
            object.__setattr__(self, name, tuple(getattr(self, name)))


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
    def from_dict(cls, data: Any) -> Contract:
        if not isinstance(data, dict):
            raise ContractError(f"contract: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise ContractError(f"contract field 'schema_version': {show(version)} is not supported "
                                f"(this usseg reads {SCHEMA_VERSION})")
        _check_keys("contract", data, cls)
        provenance = data.get("provenance", {})
        try:
            return cls(
                classes=tuple(_require(data, "classes", list)),
                input=_build("input", InputSpec, _require(data, "input", dict)),
                recipe=_build_recipe(_require(data, "recipe", dict)),
                resize=_require(data, "resize", str),
                output=_require(data, "output", str),
                output_name=data.get("output_name", "output"),
                postprocess=_build("postprocess", PostprocessSpec, data.get("postprocess", {})),
                provenance=dict(provenance) if isinstance(provenance, dict) else provenance,
                schema_version=version,
                frame=None if data.get("frame") is None else _build("frame", FrameSpec, data["frame"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"contract: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> Contract:
        if len(text) > MAX_CONTRACT_CHARS:
            raise ContractError(f"contract: {len(text)} characters, more than the {MAX_CONTRACT_CHARS} "
                                f"a contract may have")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, deep nesting
            raise ContractError(f"contract: not valid JSON ({clip(str(exc), 200)})") from None
        return cls.from_dict(data)


def _require(data: dict, key: str, kind: type) -> Any:
    if key not in data:
        raise ContractError(f"contract field '{key}' is missing")
    if not isinstance(data[key], kind):
        raise ContractError(f"contract field '{key}': expected {kind.__name__}, got {type(data[key]).__name__}")
    return data[key]


def _check_keys(where: str, data: dict, cls: type) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(clip(str(k)) for k in set(data) - known)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {unknown[:10]}; valid fields are {sorted(known)}")


def _build(where: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"contract field '{where}': expected an object, got {type(data).__name__}")
    _check_keys(f"contract field '{where}'", data, cls)
    return cls(**data)


def _build_recipe(data: dict) -> Recipe:
    """Type-check the recipe's fields here; Recipe checks its own ranges and names the field."""
    check_types("recipe", data, Recipe)
    try:
        return Recipe.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ContractError(_recipe_message(str(exc))) from None


def _recipe_message(message: str) -> str:
    """'recipe field 'x': ...' -> 'contract field 'recipe.x': ...'."""
    named = re.match(r"recipe field '(\w+)':\s*(.*)", message, re.DOTALL)
    if named:
        return f"contract field 'recipe.{named[1]}': {named[2]}"
    return f"contract field 'recipe': {message.removeprefix('recipe: ')}"


def _check_classes(classes: tuple[str, ...]) -> None:
    if not 2 <= len(classes) <= 255:
        raise ContractError(f"contract field 'classes': {len(classes)} names; need 2 to 255 (labels are 8-bit), "
                            f"background first")
    for i, name in enumerate(classes):
        problem = CLASS_NAME.problem(name)
        if problem:
            raise ContractError(f"contract field 'classes[{i}]': {problem}")
    if len(set(classes)) != len(classes):
        raise ContractError(f"contract field 'classes': duplicate names in {list(classes)}")


def _check_provenance(provenance: dict[str, Any]) -> None:
    """Shown to users only: any JSON object, of bounded nesting and size."""
    stack = [(provenance, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PROVENANCE_DEPTH:
            raise ContractError(f"contract field 'provenance': nested deeper than {MAX_PROVENANCE_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    try:
        size = len(json.dumps(provenance, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ContractError(f"contract field 'provenance': not plain JSON ({exc})") from None
    if size > MAX_PROVENANCE_CHARS:
        raise ContractError(f"contract field 'provenance': {size} characters of JSON, more than "
                            f"{MAX_PROVENANCE_CHARS}")


def validate(c: Contract) -> None:
    """Raise ContractError naming the first field that makes no sense."""
    check_spec("", c, CONTRACT_RULES)
    check_types("recipe", field_values(c.recipe), Recipe)
    _check_classes(tuple(c.classes))
    _check_provenance(c.provenance)
    spec = c.input
    if c.num_classes * spec.height * spec.width > MAX_SCORES:
        raise ContractError(f"contract field 'input': {c.num_classes} classes at {spec.height}x{spec.width} "
                            f"need more than {MAX_SCORES} scores per frame")
    if c.frame is not None:
        f = c.frame
        if f.height < spec.height and f.width < spec.width:
            raise ContractError(f"contract field 'frame': {f.height}x{f.width} frames would be enlarged to the "
                                f"{spec.height}x{spec.width} input; in-graph preprocessing only shrinks")
    if c.postprocess.kind == "spine" and tuple(c.classes) != SPINE_CLASSES:
        raise ContractError(f"contract field 'postprocess.kind': 'spine' needs classes {list(SPINE_CLASSES)}")
    _check_cleanup(c)


def _check_cleanup(c: Contract) -> None:
    """The clean-up steps name foreground classes of this model, each once."""
    valid = list(c.classes[1:])
    for name in CLEANUP_FIELDS:
        seen = set()
        for i, value in enumerate(getattr(c.postprocess, name)):
            where = f"contract field 'postprocess.{name}[{i}]'"
            if value not in valid:
                raise ContractError(f"{where}: {show(value)} is not a foreground class of this model; "
                                    f"valid: {json.dumps(valid)}")
            if value in seen:
                raise ContractError(f"{where}: {show(value)} is listed twice")
            seen.add(value)


SEED_FRAME = (480, 640)  # the label-map size the seed's post-processing thresholds were set for


def default_postprocess(classes: tuple[str, ...], input_hw: tuple[int, int] = SEED_FRAME) -> PostprocessSpec:
    """The seed's rules for the spine classes, plain label maps for any other class set.

    The runtime post-processes labels at the model's input size, so the seed's pixel thresholds
    (set for 480x640 maps) are scaled by the size of that map letterboxed into ``input_hw``:
    areas by the square of the scale, the line clean-up's iterations and the Hough lengths and
    votes by the scale. A structure the seed
    would keep is kept at any model size; at 480x640 these are the seed's own values.
    """
    if tuple(classes) != SPINE_CLASSES:
        return PostprocessSpec(kind="none")
    seed = PostprocessSpec()
    scale = min(input_hw[0] / SEED_FRAME[0], input_hw[1] / SEED_FRAME[1])
    return PostprocessSpec(min_line_area=max(1, round(seed.min_line_area * scale ** 2)),
                           morph_iterations=round(seed.morph_iterations * scale),
                           min_box_area=max(1, round(seed.min_box_area * scale ** 2)),
                           hough_threshold=max(5, round(seed.hough_threshold * scale)),
                           hough_min_length=max(1, round(seed.hough_min_length * scale)),
                           hough_max_gap=max(1, round(seed.hough_max_gap * scale)))
