"""The model file: its contract, and the graph's input and output tensors checked against it.

``read_model(path)`` reads both from the file (with the ``onnx`` package; no ONNX Runtime session
is opened) before anything is built from them: the contract is read once, and every stage of the
Segmenter and the session plan are made from it. A model file is untrusted: its contract may say
one thing and its graph do another. Checking the tensors (name, rank, dims, dtype) when the model
is loaded turns what would be an ONNX Runtime traceback at warm-up into one message that names the
model and the tensor. The checks take anything with ``.name``, ``.shape`` and ``.type`` (ONNX
Runtime's ``NodeArg`` reads the same), so a Triton server's model config goes through the same code
(:func:`triton_tensors`).

This module is the one description of the model's tensors: what the graph takes and gives
(:func:`expected_input`, :func:`expected_output`) and what the engine binds (:class:`ModelIO`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import METADATA_KEY, Contract, ContractError
from .providers import ModelError, first_line

# What the runtime binds and reads back (the engine's output buffer, the decoder).
SCORE_TYPES = ("tensor(float)",)
LABEL_TYPES = ("tensor(uint8)", "tensor(int64)")
DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}
TRITON_TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_FP16": "tensor(float16)", "TYPE_UINT8": "tensor(uint8)",
                "TYPE_INT32": "tensor(int32)", "TYPE_INT64": "tensor(int64)"}


class GraphMismatchError(ContractError):
    """A graph whose input or output tensors are not what its contract says."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as ONNX Runtime describes it; a dim that is not an int is dynamic."""

    name: str
    shape: list[Any]
    type: str

    @property
    def dtype(self) -> Any:
        """The numpy dtype of an element (for the types the runtime binds)."""
        return DTYPES[self.type]


@dataclass(frozen=True)
class ModelIO:
    """What the engine binds: the one input and the one output, with the contract's dims (batch
    first: 1, or None when dynamic) and the element type the graph declares."""

    input: TensorInfo
    output: TensorInfo

    def shapes(self, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The input and output shapes for ``batch`` frames."""
        return (batch, *self.input.shape[1:]), (batch, *self.output.shape[1:])


@dataclass(frozen=True)
class ModelFile:
    """A model file as read once: its contract, its checked tensors and its SHA-256."""

    path: Path
    contract: Contract
    io: ModelIO
    sha256: str


def expected_input(contract: Contract) -> TensorInfo:
    """The one input the runtime feeds: the raw uint8 frame (in-graph preprocessing) or the
    preprocessed float32 image; a batch of None is dynamic."""
    spec, frame = contract.input, contract.frame
    if frame is not None:
        return TensorInfo(frame.name, [spec.batch, 1, frame.height, frame.width], "tensor(uint8)")
    return TensorInfo(spec.name, [spec.batch, spec.channels, spec.height, spec.width], "tensor(float)")


def expected_output(contract: Contract) -> TensorInfo:
    """[N, H, W] labels or [N, C, H, W] scores at the network's input size."""
    spec = contract.input
    if contract.output == "labels":
        return TensorInfo(contract.output_name, [spec.batch, spec.height, spec.width], " or ".join(LABEL_TYPES))
    return TensorInfo(contract.output_name, [spec.batch, contract.num_classes, spec.height, spec.width],
                      " or ".join(SCORE_TYPES))


def check_graph_io(inputs: Iterable[Any], outputs: Iterable[Any], contract: Contract, where: Any) -> ModelIO:
    """What to bind for the graph; raises GraphMismatchError (naming ``where`` and the tensor)
    unless the graph takes the one input and gives the output its contract describes.

    Args:
        inputs, outputs: ``session.get_inputs()`` / ``session.get_outputs()`` or TensorInfo.
        where: the model file (or URL) for the message.
    """
    inputs, outputs = list(inputs), list(outputs)
    want = expected_input(contract)
    if len(inputs) != 1:
        raise GraphMismatchError(f"{where}: the graph takes {len(inputs)} inputs {[i.name for i in inputs]}; "
                                 f"its contract describes one, {want.name!r}")
    _check_tensor(where, "input", inputs[0], want, (want.type,), contract)
    found = {o.name: o for o in outputs}
    got = found.get(contract.output_name)
    if got is None:
        raise GraphMismatchError(f"{where}: the graph has no output {contract.output_name!r} (contract field "
                                 f"'output_name'); its outputs are {sorted(found)}")
    types = LABEL_TYPES if contract.output == "labels" else SCORE_TYPES
    out = expected_output(contract)
    _check_tensor(where, "output", got, out, types, contract)
    return ModelIO(want, TensorInfo(out.name, out.shape, got.type))


def _check_tensor(where: Any, role: str, got: Any, want: TensorInfo, types: Sequence[str],
                  contract: Contract) -> None:
    problem = _problem(role, got, want, types, contract)
    if problem:
        raise GraphMismatchError(f"{where}: graph {role} {got.name!r} {_dims(got.shape)} {got.type} does not match "
                                 f"the contract's {want.name!r} {_dims(want.shape)} {want.type}: {problem}")


def _problem(role: str, got: Any, want: TensorInfo, types: Sequence[str], contract: Contract) -> str | None:
    if got.name != want.name:
        return f"the {role} is named {got.name!r}"
    shape = got.shape
    if not isinstance(shape, (list, tuple)) or len(shape) != len(want.shape):
        rank = len(shape) if isinstance(shape, (list, tuple)) else "unknown"
        if role == "output" and rank == 4 and contract.output == "labels":
            return "rank 4 ([N, C, H, W]), the contract says 'labels' ([N, H, W])"
        if role == "output" and rank == 3:
            return f"rank 3 ([N, H, W] labels), the contract says {contract.output!r} ([N, C, H, W])"
        return f"rank {rank}, need {len(want.shape)}"
    if got.type not in types:
        return f"element type {got.type}, need {' or '.join(types)}"
    static = [isinstance(d, int) and not isinstance(d, bool) for d in shape]
    if want.shape[0] is None and static[0]:
        return f"the graph's batch is fixed at {shape[0]}, the contract says dynamic (contract field 'input.batch')"
    if want.shape[0] is not None and static[0] and shape[0] != want.shape[0]:
        return f"batch {shape[0]}, the contract says {want.shape[0]}"
    axes = ("batch", "channels", "height", "width") if len(shape) == 4 else ("batch", "height", "width")
    for axis in range(1, len(shape)):
        # Every input dim and the output's class dim must be fixed; the output's H, W where fixed.
        must_be_fixed = role == "input" or axes[axis] == "channels"
        if (static[axis] and shape[axis] != want.shape[axis]) or (must_be_fixed and not static[axis]):
            if role == "output" and axes[axis] == "channels":
                return f"{shape[axis]} channels, the contract has {want.shape[axis]} classes {list(contract.classes)}"
            return f"{axes[axis]} {shape[axis]}, the contract says {want.shape[axis]}"
    return None


def _dims(shape: Any) -> str:
    if not isinstance(shape, (list, tuple)):
        return "[?]"
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def triton_tensors(config: Any, where: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The inputs and outputs of a Triton model config (as its HTTP API returns it) as TensorInfo,
    ready for :func:`check_graph_io`. With ``max_batch_size`` > 0 Triton declares dims per item and
    adds a dynamic batch; -1 is a dynamic dim."""
    try:
        batched = int(config.get("max_batch_size", 0)) > 0
        lead: list[Any] = ["batch"] if batched else []

        def tensors(key: str) -> list[TensorInfo]:
            return [TensorInfo(str(t["name"]), lead + [None if int(d) < 0 else int(d) for d in t.get("dims", [])],
                               TRITON_TYPES.get(t.get("data_type"), str(t.get("data_type"))))
                    for t in config.get(key, [])]

        return tensors("input"), tensors("output")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise GraphMismatchError(f"{where}: the model config's tensors are malformed ({type(exc).__name__}: {exc})") from None


def read_model(path: Path) -> ModelFile:
    """The contract of the model file at ``path`` and its graph's tensors, checked against each
    other; ModelError (naming the file) for a file that is no ONNX model, carries no valid usseg
    contract, or whose graph disagrees with it."""
    import onnx

    path = Path(path)
    try:
        data = path.read_bytes()
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and whatever a broken file gives
        raise ModelError(f"{path}: cannot load this model ({first_line(exc)})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelError(f"{path}: no usseg contract in the model metadata (key '{METADATA_KEY}'); "
                         f"export it with usseg-export")
    try:
        contract = Contract.from_json(meta[METADATA_KEY])
        weights = {init.name for init in model.graph.initializer}
        inputs = [onnx_tensor(v) for v in model.graph.input if v.name not in weights]
        io = check_graph_io(inputs, [onnx_tensor(v) for v in model.graph.output], contract, path)
    except ContractError as exc:
        raise ModelError(str(exc) if isinstance(exc, GraphMismatchError) else f"{path}: {exc}") from None
    return ModelFile(path, contract, io, hashlib.sha256(data).hexdigest())


def onnx_tensor(value: Any) -> TensorInfo:
    """An ONNX ``ValueInfoProto`` as ONNX Runtime's NodeArg describes it: ``tensor(float)``, dims
    as ints, a named dim as its name, an unknown one as None."""
    from onnx import TensorProto

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorInfo(value.name, [], str(kind))
    tensor = value.type.tensor_type
    shape: Any = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return TensorInfo(value.name, shape, f"tensor({TensorProto.DataType.Name(tensor.elem_type).lower()})")
