"""The graph's input and output tensors checked against the model contract.

A model file is untrusted: its contract may say one thing and its graph do another. Checking the
tensors (name, rank, dims, dtype) when the model is loaded turns what would be an ONNX Runtime
traceback at warm-up into one message that names the model and the tensor. The checks take
anything with ``.name``, ``.shape`` and ``.type`` (ONNX Runtime's ``NodeArg``), so a Triton
server's model config goes through the same code (:func:`triton_tensors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .contract import Contract, ContractError

# What the runtime binds and reads back (Segmenter's output buffer, labels_from_output).
SCORE_TYPES = ("tensor(float)",)
LABEL_TYPES = ("tensor(uint8)", "tensor(int64)")
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


def check_graph_io(inputs: Iterable[Any], outputs: Iterable[Any], contract: Contract, where: Any) -> None:
    """Raise GraphMismatchError (naming ``where`` and the tensor) unless the graph takes the one
    input and gives the output its contract describes.

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
    _check_tensor(where, "output", got, expected_output(contract), types, contract)


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
