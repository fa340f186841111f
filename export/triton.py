"""A Triton Inference Server model repository for an exported model: serving at scale is done by
an existing server; usseg's pre- and post-processing run client-side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from usseg.runtime.contract import Contract

ONNX_TO_TRITON = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64"}


def output_dims(contract: Contract) -> list[int]:
    h, w = contract.input.height, contract.input.width
    return [h, w] if contract.output == "labels" else [contract.num_classes, h, w]


def config_pbtxt(contract: Contract, name: str) -> str:
    """config.pbtxt text. A fixed batch of 1 is written as max_batch_size 0 with explicit dims."""
    spec = contract.input
    in_dims = [spec.channels, spec.height, spec.width]
    out_dims = output_dims(contract)
    if spec.batch is None:
        max_batch = 16
    else:
        max_batch = 0
        in_dims, out_dims = [spec.batch] + in_dims, [spec.batch] + out_dims
    out_type = "TYPE_UINT8" if contract.output == "labels" else "TYPE_FP32"
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch}",
        "input [",
        "  {",
        f'    name: "{spec.name}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {', '.join(map(str, in_dims))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{contract.output_name}"',
        f"    data_type: {out_type}",
        f"    dims: [ {', '.join(map(str, out_dims))} ]",
        "  }",
        "]",
        "instance_group [ { kind: KIND_AUTO } ]",
        "parameters {",
        '  key: "usseg.contract"',
        f"  value: {{ string_value: {json.dumps(contract.to_json())} }}",
        "}",
    ]
    if max_batch:
        lines.insert(-5, "dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_repository(model_path: Path, contract: Contract, repo: Path, name: str = "usseg") -> Path:
    """repo/name/config.pbtxt and repo/name/1/model.onnx; written beside, then moved into place."""
    final = repo / name
    tmp = repo / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "1").mkdir(parents=True)
    try:
        shutil.copyfile(model_path, tmp / "1" / "model.onnx")
        (tmp / "config.pbtxt").write_text(config_pbtxt(contract, name))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final
