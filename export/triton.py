"""A Triton Inference Server model repository for an exported model: serving at scale is done by
an existing server; usseg's pre- and post-processing run client-side (usseg.runtime.triton_client).

The config.pbtxt is checked against Triton's own schema, the ``ModelConfig`` protobuf that
``tritonclient`` ships, when that optional extra is installed (``pip install usseg[triton]``):
a config Triton would refuse, or one that disagrees with the contract, fails the export instead
of failing later on the server.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from google.protobuf import text_encoding

from usseg.runtime.contract import METADATA_KEY, Contract, ContractError

from .errors import ExportError

log = logging.getLogger("usseg.export")

PLATFORM = "onnxruntime_onnx"
DYNAMIC_MAX_BATCH = 16
ONNX_TO_TRITON = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64"}


class TritonConfigError(ExportError):
    """The written config.pbtxt is not a valid Triton model config, or disagrees with the contract."""


def output_dims(contract: Contract) -> list[int]:
    h, w = contract.input.height, contract.input.width
    return [h, w] if contract.output == "labels" else [contract.num_classes, h, w]


def output_type(contract: Contract) -> str:
    """The graph's output data type: argmax labels are exported as uint8, scores as float32."""
    return "TYPE_UINT8" if contract.output == "labels" else "TYPE_FP32"


def expected_tensors(contract: Contract) -> tuple[int, dict[str, tuple[str, list[int]]]]:
    """(max_batch_size, {tensor name: (data type, dims)}) that the config must declare.

    A fixed batch is written as max_batch_size 0 with the batch in the dims; a dynamic batch as
    max_batch_size 16 with dims per item (Triton adds the batch dimension itself).
    """
    spec = contract.input
    in_dims = [spec.channels, spec.height, spec.width]
    out_dims = output_dims(contract)
    if spec.batch is None:
        max_batch = DYNAMIC_MAX_BATCH
    else:
        max_batch = 0
        in_dims, out_dims = [spec.batch] + in_dims, [spec.batch] + out_dims
    return max_batch, {spec.name: ("TYPE_FP32", in_dims), contract.output_name: (output_type(contract), out_dims)}


def _pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal. JSON escaping is not the same language (its \\u
    escapes are not read alike by every protobuf parser), so protobuf's own escaping is used."""
    return '"' + text_encoding.CEscape(text.encode("utf-8"), as_utf8=False) + '"'


def config_pbtxt(contract: Contract, name: str) -> str:
    """config.pbtxt text: inputs and outputs from the contract, and the contract itself as the
    model parameter ``usseg.contract``, which is how a client learns the preprocessing."""
    max_batch, tensors = expected_tensors(contract)
    spec = contract.input
    (in_type, in_dims), (out_type, out_dims) = tensors[spec.name], tensors[contract.output_name]
    lines = [
        f"name: {_pbtxt_string(name)}",
        f"platform: {_pbtxt_string(PLATFORM)}",
        f"max_batch_size: {max_batch}",
        "input [",
        "  {",
        f"    name: {_pbtxt_string(spec.name)}",
        f"    data_type: {in_type}",
        f"    dims: [ {', '.join(map(str, in_dims))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_pbtxt_string(contract.output_name)}",
        f"    data_type: {out_type}",
        f"    dims: [ {', '.join(map(str, out_dims))} ]",
        "  }",
        "]",
    ]
    if max_batch:
        lines.append("dynamic_batching { }")
    lines += [
        "instance_group [ { kind: KIND_AUTO } ]",
        "parameters {",
        f"  key: {_pbtxt_string(METADATA_KEY)}",
        f"  value: {{ string_value: {_pbtxt_string(contract.to_json())} }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def load_model_config_schema() -> Any | None:
    """Triton's ModelConfig protobuf class from tritonclient, or None when the extra is missing."""
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient turns a missing grpcio into RuntimeError
        log.info("Triton config validation skipped: tritonclient[grpc] is not installed (%s); "
                 "install it with: pip install 'usseg[triton]'", str(exc).splitlines()[0])
        return None
    return model_config_pb2.ModelConfig


def validate_config(text: str, contract: Contract, name: str, schema: Any) -> Any:
    """Parse ``text`` with Triton's ModelConfig and check it against the contract.

    Returns the parsed ModelConfig message.

    Raises:
        TritonConfigError: naming the first field that is wrong, or the parser's message.
    """
    from google.protobuf import text_format

    try:
        cfg = text_format.Parse(text, schema())
    except text_format.ParseError as exc:
        raise TritonConfigError(f"config.pbtxt is not a valid Triton model config: {exc}") from None
    dtype_name = schema.DESCRIPTOR.file.enum_types_by_name["DataType"]
    max_batch, tensors = expected_tensors(contract)
    problems = []
    if cfg.name != name:
        problems.append(f"name {cfg.name!r}, expected {name!r} (the model folder's name)")
    if cfg.platform != PLATFORM:
        problems.append(f"platform {cfg.platform!r}, expected {PLATFORM!r}")
    if cfg.max_batch_size != max_batch:
        problems.append(f"max_batch_size {cfg.max_batch_size}, expected {max_batch}")
    declared = {t.name: (dtype_name.values_by_number[t.data_type].name, list(t.dims))
                for t in list(cfg.input) + list(cfg.output)}
    if len(cfg.input) != 1 or len(cfg.output) != 1:
        problems.append(f"{len(cfg.input)} input(s) and {len(cfg.output)} output(s), expected 1 and 1")
    for tensor, want in tensors.items():
        if declared.get(tensor) != want:
            problems.append(f"tensor {tensor!r} declared as {declared.get(tensor)}, expected {want}")
    if max_batch and not cfg.HasField("dynamic_batching"):
        problems.append("a dynamic batch without dynamic_batching")
    if METADATA_KEY not in cfg.parameters:
        problems.append(f"no parameter {METADATA_KEY!r}")
    elif _read_contract(cfg.parameters[METADATA_KEY].string_value) != contract:
        problems.append(f"parameter {METADATA_KEY!r} does not read back as the model's contract")
    if problems:
        raise TritonConfigError("config.pbtxt does not match the contract: " + "; ".join(problems))
    return cfg


def _read_contract(text: str) -> Contract | None:
    try:
        return Contract.from_json(text)
    except ContractError:
        return None


def write_repository(model_path: Path, contract: Contract, repo: Path, name: str = "usseg") -> Path:
    """repo/name/config.pbtxt and repo/name/1/model.onnx; written beside, validated, then moved
    into place, so a config that fails validation never replaces a good repository."""
    final = repo / name
    tmp = repo / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "1").mkdir(parents=True)
    try:
        shutil.copyfile(model_path, tmp / "1" / "model.onnx")
        text = config_pbtxt(contract, name)
        schema = load_model_config_schema()
        if schema is not None:
            validate_config(text, contract, name, schema)
            log.info("Triton config validated against tritonclient's ModelConfig schema")
        (tmp / "config.pbtxt").write_text(text)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("Triton model repository written: %s (serve with: tritonserver --model-repository %s)", final, repo)
    return final
