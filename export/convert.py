"""The conversion steps: PyTorch -> ONNX fp32 (BatchNorm folded, constants folded), fp16, int8 QDQ,
and the contract written into ``metadata_props``. Each step writes atomically."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import torch

from usseg.runtime.contract import METADATA_KEY, Contract

log = logging.getLogger("usseg.export")


class OutputHead(torch.nn.Module):
    """The network plus what the contract says the graph outputs: logits, probabilities or labels."""

    def __init__(self, model: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        if self.output == "probs":
            return torch.softmax(y, dim=1)
        if self.output == "labels":
            return torch.argmax(y, dim=1).to(torch.uint8)
        return y


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_fp32(model: torch.nn.Module, contract: Contract, path: Path, opset: int) -> None:
    """Trace with the torch.export-based exporter; its optimiser folds BatchNorm and constants."""
    spec = contract.input
    head = OutputHead(model.eval(), contract.output).eval()
    example = torch.zeros(spec.batch or 2, spec.channels, spec.height, spec.width)
    dynamic = None if spec.batch else {"x": {0: torch.export.Dim("batch", min=1, max=256)}}
    tmp = _tmp_for(path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(head, (example,), dynamo=True, opset_version=opset,
                                        input_names=[spec.name], output_names=[contract.output_name],
                                        dynamic_shapes=dynamic, optimize=True, verbose=False)
        program.save(str(tmp))
        model_proto = onnx.load(str(tmp))
        strip_training_nodes(model_proto)
        write_contract(model_proto, contract)
        onnx.checker.check_model(model_proto)
        onnx.save(model_proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def strip_training_nodes(model_proto: onnx.ModelProto) -> None:
    """Drop Identity/Dropout nodes left from training modules by rewiring their consumers."""
    graph = model_proto.graph
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type not in ("Identity", "Dropout") or node.output[0] in outputs:
            continue
        src, dst = node.input[0], node.output[0]
        for other in graph.node:
            for i, name in enumerate(other.input):
                if name == dst:
                    other.input[i] = src
        graph.node.remove(node)


def write_contract(model_proto: onnx.ModelProto, contract: Contract) -> None:
    """Put the contract JSON into metadata_props (replacing an older one)."""
    for prop in list(model_proto.metadata_props):
        if prop.key == METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract.to_json()
    model_proto.producer_name = "usseg"


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so that each comes after the producers of its inputs (the fp16 converter
    appends its input casts at the end, which the checker rejects)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = [n for n in pending if all(name in ready for name in n.input)]
        if not progressed:
            raise ValueError("graph has a cycle or an input that nothing produces")
        for node in progressed:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in progressed]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(src: Path, dst: Path, contract: Contract) -> None:
    """float16 weights and activations; input and output stay float32 as the contract says."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model_proto = onnx.load(str(src))
    half = convert_float_to_float16(model_proto, keep_io_types=True, disable_shape_infer=False)
    topological_sort(half.graph)
    write_contract(half, contract)
    onnx.checker.check_model(half)
    tmp = _tmp_for(dst)
    try:
        onnx.save(half, str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class _FrameReader:
    """Feeds preprocessed calibration frames to ONNX Runtime's calibrator, one batch at a time."""

    def __init__(self, frames: Iterable[np.ndarray], input_name: str, batch: int) -> None:
        arr = np.stack(list(frames)).astype(np.float32)[:, None]
        self._batches = iter([{input_name: arr[i:i + batch]} for i in range(0, len(arr) - batch + 1, batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - older calibrators do not call it
        pass


def quantize_int8(src: Path, dst: Path, contract: Contract, frames: list[np.ndarray]) -> None:
    """Static QDQ quantisation with ONNX Runtime's own tools, calibrated on preprocessed frames."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_FrameReader, CalibrationDataReader):
        pass

    prepped = _tmp_for(dst).with_suffix(".pre.onnx")
    tmp = _tmp_for(dst)
    try:
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(tmp), Reader(frames, contract.input.name, contract.input.batch or 1),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
        model_proto = onnx.load(str(tmp))
        write_contract(model_proto, contract)
        onnx.save(model_proto, str(tmp))
        os.replace(tmp, dst)
    finally:
        prepped.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
