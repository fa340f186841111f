"""A network with its preprocessing in front: the model that takes raw uint8 frames.

The exported network (any precision) and ``recipe_graph`` are joined into one graph whose input
is the contract's ``frame``; verification runs it on raw frames against the host preprocessing
followed by the network alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from usseg.runtime.contract import Contract
from usseg.runtime.errors import UssegError
from usseg.runtime.preprocess import preprocess
from usseg.runtime.recipe.graph import GraphRecipeError, recipe_graph
from usseg.runtime.sessions import cpu_session

from .convert import write_contract
from .frames import raw_frames
from .verify import VerificationError, labels_of

PREPROCESSED = "usseg_preprocessed"
MIN_LABEL_AGREEMENT = 0.999


class GraphPreprocessError(UssegError, ValueError):
    """The recipe or frame size has no in-graph form, or the graphs cannot be joined."""


@dataclass(frozen=True)
class GraphParity:
    label_agreement: float   # graph on raw frames vs host preprocessing + network
    input_max_delta: float   # largest difference of the network input, [0, 1] units
    frames: int


def _build(contract: Contract, opset: int) -> onnx.ModelProto:
    spec, frame = contract.input, contract.frame
    try:
        return recipe_graph(contract.recipe, frame.height, frame.width, spec.height, spec.width,
                            batch=spec.batch, output=PREPROCESSED, opset=opset, input_name=frame.name)
    except GraphRecipeError as exc:
        raise GraphPreprocessError(str(exc)) from None


def check_graph_preprocessing(contract: Contract, opset: int) -> None:
    """Raise GraphPreprocessError when the contract's recipe and sizes have no in-graph form."""
    _build(contract, opset)


def prepend_preprocessing(network: Path, out: Path, contract: Contract) -> None:
    """Write ``network`` with ``contract.recipe`` in front of it to ``out`` (atomically)."""
    net = onnx.load(str(network))
    opset = next(o.version for o in net.opset_import if o.domain in ("", "ai.onnx"))
    spec = contract.input
    pre = _build(contract, opset)
    pre.ir_version = net.ir_version
    merged = onnx.compose.merge_models(pre, net, io_map=[(PREPROCESSED, spec.name)],
                                       producer_name="usseg", doc_string="usseg model with in-graph preprocessing")
    write_contract(merged, contract)
    onnx.checker.check_model(merged)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(merged, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _session(model: Path | bytes) -> ort.InferenceSession:
    return cpu_session(model)


def verify_graph_preprocessing(graph: Path, network: Path, contract: Contract, frames_dir: Path | None) -> GraphParity:
    """Labels of the joined model on raw frames against the host path; raises VerificationError."""
    spec, frame = contract.input, contract.frame
    frames = [cv2.resize(f, (frame.width, frame.height), interpolation=cv2.INTER_AREA)
              if f.shape != (frame.height, frame.width) else f for f in raw_frames(frames_dir)]
    joined, alone = _session_with_network_input(graph), _session(network)
    agree, delta = [], 0.0
    for f in frames:
        host = preprocess(f, contract.recipe, spec.height, spec.width)[0][None, None]
        ours, ours_input = joined.run([contract.output_name, PREPROCESSED], {frame.name: f[None, None]})
        theirs = alone.run(None, {spec.name: host})[0]
        agree.append(float((labels_of(ours, contract.output) == labels_of(theirs, contract.output)).mean()))
        delta = max(delta, float(np.abs(ours_input - host).max()))
    parity = GraphParity(float(np.mean(agree)), delta, len(frames))
    if min(agree) < MIN_LABEL_AGREEMENT:
        raise VerificationError(
            f"in-graph preprocessing: labels agree with the host path on {100 * min(agree):.3f} % of pixels "
            f"of the worst frame, need >= {100 * MIN_LABEL_AGREEMENT:.1f} % (largest input difference {delta:.4f})")
    return parity


def _session_with_network_input(graph: Path) -> ort.InferenceSession:
    """The joined model with the network's input as a second output, so one run gives both."""
    model = onnx.load(str(graph))
    model.graph.output.append(onnx.helper.make_tensor_value_info(PREPROCESSED, onnx.TensorProto.FLOAT, None))
    return _session(model.SerializeToString())
