"""check_graph_io: tiny ONNX graphs whose tensors disagree with their contract, described by a real
ONNX Runtime CPU session, are refused with the model and the tensor named."""

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from usseg.runtime.contract import Contract, FrameSpec, InputSpec, PostprocessSpec
from usseg.runtime.model_io import (
    GraphMismatchError,
    TensorInfo,
    check_graph_io,
    onnx_tensor,
    read_model,
    triton_tensors,
)
from usseg.runtime.preprocess import get_recipe

H, W = 16, 24
CLASSES = ("background", "nerve", "vessel", "bone")


def contract(**kw):
    base = {"classes": CLASSES, "input": InputSpec(height=H, width=W), "recipe": get_recipe("none"),
            "postprocess": PostprocessSpec(kind="none")}
    return Contract(**{**base, **kw})


def graph(**build):
    return ort.InferenceSession(graph_model(**build).SerializeToString(), providers=["CPUExecutionProvider"])


def graph_model(*, channels=4, head="logits", out_name="output", out_type=None, batch=1, in_name="image",
                in_shape=None, frame=None, pool=1, second_input=False, second_output=False):
    """(uint8 frame -> float, 2x2 average pool) -> 1x1 conv to ``channels`` scores -> optional
    ArgMax ``head`` -> optional Cast to ``out_type``."""
    nodes, inits = [], [numpy_helper.from_array(np.ones((channels, 1, 1, 1), np.float32), "w")]
    x = in_name
    if frame is not None:  # in-graph preprocessing: raw uint8 frames twice the network size
        nodes += [helper.make_node("Cast", [in_name], ["f"], to=TensorProto.FLOAT),
                  helper.make_node("AveragePool", ["f"], ["x"], kernel_shape=[2, 2], strides=[2, 2])]
        x = "x"
    if pool > 1:
        nodes.append(helper.make_node("AveragePool", [x], ["p"], kernel_shape=[pool, pool], strides=[pool, pool]))
        x = "p"
    nodes.append(helper.make_node("Conv", [x, "w"], ["scores"]))
    y, elem = "scores", TensorProto.FLOAT
    if head in ("labels", "labels4"):
        nodes.append(helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=int(head == "labels4")))
        y, elem = "argmax", TensorProto.INT64
    if out_type is not None:
        nodes.append(helper.make_node("Cast", [y], ["cast"], to=out_type))
        y, elem = "cast", out_type
    nodes.append(helper.make_node("Identity", [y], [out_name]))
    n = "N" if batch is None else batch
    h, w = H // pool, W // pool
    out_shape = {"logits": [n, channels, h, w], "labels": [n, h, w], "labels4": [n, 1, h, w]}[head]
    in_shape = in_shape or ([n, 1, 2 * H, 2 * W] if frame is not None else [n, 1, H, W])
    in_elem = TensorProto.UINT8 if frame is not None else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(in_name, in_elem, in_shape)]
    outputs = [helper.make_tensor_value_info(out_name, elem, out_shape)]
    if second_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [n, 1, H, W]))
    if second_output:
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n, channels, h, w]))
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def check(session, c):
    check_graph_io(session.get_inputs(), session.get_outputs(), c, "m.onnx")


GOOD = [
    # (graph, contract): each pair is what export writes, or what the runtime can read
    ({}, contract()),
    ({}, contract(output="probs")),
    ({"head": "labels", "out_type": TensorProto.UINT8}, contract(output="labels")),   # export's labels
    ({"head": "labels"}, contract(output="labels")),                               # int64 labels
    ({"batch": None}, contract(input=InputSpec(height=H, width=W, batch=None))),   # dynamic batch
    ({"batch": None}, contract()),                   # a dynamic graph fed one frame at a time
    ({"second_output": True}, contract()),           # extra outputs are not bound, not read
    ({"out_name": "logits:0"}, contract(output_name="logits:0")),
    ({"in_name": "frame", "frame": True}, contract(frame=FrameSpec(height=2 * H, width=2 * W))),
]


@pytest.mark.parametrize("build,c", GOOD)
def test_graphs_that_match_their_contract_pass(build, c):
    session = graph(**build)
    check(session, c)
    feed = np.zeros([d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape],
                    np.uint8 if c.frame is not None else np.float32)
    out = session.run([c.output_name], {session.get_inputs()[0].name: feed})[0]
    assert out.shape[-2:] == (H, W) and (out.ndim == 3) == (c.output == "labels")  # and it runs as checked


BAD = [
    # (graph, contract, what the message must say)
    ({"channels": 3}, contract(),
     (r"graph output 'output' \[1, 3, 16, 24\] tensor\(float\) does not match the contract's 'output' "
     r"\[1, 4, 16, 24\] tensor\(float\): 3 channels, the contract has 4 classes")),
    ({"out_name": "logits"}, contract(),
     r"no output 'output' \(contract field 'output_name'\); its outputs are \['logits'\]"),
    ({}, contract(output="labels"), r"rank 4 \(\[N, C, H, W\]\), the contract says 'labels' \(\[N, H, W\]\)"),
    ({"head": "labels", "out_type": TensorProto.UINT8}, contract(), r"rank 3 \(\[N, H, W\] labels\), the contract says 'logits'"),
    ({"head": "labels4", "out_type": TensorProto.UINT8}, contract(output="labels"), r"\[1, 1, 16, 24\] tensor\(uint8\) .*: rank 4"),
    ({"out_type": TensorProto.FLOAT16}, contract(), r"element type tensor\(float16\), need tensor\(float\)"),
    ({"out_type": TensorProto.DOUBLE}, contract(output="probs"), r"element type tensor\(double\)"),
    ({"head": "labels", "out_type": TensorProto.INT32}, contract(output="labels"),
     r"element type tensor\(int32\), need tensor\(uint8\) or tensor\(int64\)"),
    ({"head": "labels", "out_type": TensorProto.FLOAT}, contract(output="labels"), r"element type tensor\(float\)"),
    ({"pool": 2}, contract(), r"height 8, the contract says 16"),
    ({"in_name": "x"}, contract(), r"graph input 'x' .* does not match the contract's 'image'.*: the input is named 'x'"),
    ({"in_shape": [1, 1, H, W]}, contract(input=InputSpec(height=2 * H, width=W)),
     (r"graph input 'image' \[1, 1, 16, 24\] tensor\(float\) does not match the contract's 'image' "
     r"\[1, 1, 32, 24\] tensor\(float\): height 16, the contract says 32")),
    ({"in_shape": [1, 1, "H", W], "pool": 1}, contract(), r"height H, the contract says 16"),  # symbolic input dim
    ({"in_name": "frame", "frame": True}, contract(input=InputSpec(name="frame", height=H, width=W)),
     r"element type tensor\(uint8\), need tensor\(float\)"),
    ({}, contract(frame=FrameSpec(name="image", height=H, width=W)), r"element type tensor\(float\), need tensor\(uint8\)"),
    ({"second_input": True}, contract(), r"the graph takes 2 inputs \['image', 'mask'\]; its contract describes one"),
    ({"batch": 2}, contract(), r"batch 2, the contract says 1"),
    ({}, contract(input=InputSpec(height=H, width=W, batch=None)),
     r"batch is fixed at 1, the contract says dynamic \(contract field 'input.batch'\)"),
]


@pytest.mark.parametrize("build,c,message", BAD)
def test_graphs_that_disagree_with_their_contract_are_refused(build, c, message):
    with pytest.raises(GraphMismatchError, match=r"^m\.onnx: .*" + message):
        check(graph(**build), c)


@pytest.mark.parametrize("build", [build for build, _ in GOOD] + [build for build, _, _ in BAD])
def test_a_model_file_describes_its_tensors_as_onnxruntime_does(build):
    # read_model checks the file's tensors before any session opens: they must be what ORT reports
    model = graph_model(**build)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for ours, theirs in ((model.graph.input, session.get_inputs()), (model.graph.output, session.get_outputs())):
        assert [onnx_tensor(v) for v in ours] == [TensorInfo(t.name, t.shape, t.type) for t in theirs]


def test_an_exported_model_passes_and_a_changed_contract_does_not(tiny_onnx):
    import hashlib

    model = read_model(tiny_onnx)
    c, io = model.contract, model.io
    assert model.sha256 == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    spec = c.input
    assert io.shapes(3) == ((3, 1, spec.height, spec.width), (3, c.num_classes, spec.height, spec.width))
    assert (io.input.name, io.input.dtype, io.output.dtype) == (spec.name, np.float32, np.float32)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    assert check_graph_io(session.get_inputs(), session.get_outputs(), c, tiny_onnx) == io
    changed = [
        (replace(c, output="labels", postprocess=c.postprocess), "the contract says 'labels'"),
        (replace(c, output_name="scores"), "no output 'scores'"),
        (replace(c, input=replace(c.input, height=c.input.height + 8)), "height"),
        (replace(c, classes=c.classes[:3], postprocess=PostprocessSpec(kind="none")), "the contract has 3 classes"),
    ]
    for bad, words in changed:
        with pytest.raises(GraphMismatchError, match=words) as err:
            check_graph_io(session.get_inputs(), session.get_outputs(), bad, tiny_onnx)
        assert str(err.value).startswith(str(tiny_onnx))


@pytest.mark.parametrize("batch,output", [(1, "logits"), (None, "logits"), (1, "labels"), (None, "labels")])
def test_triton_configs_written_by_export_pass_the_same_check(batch, output):
    """The config a Triton server returns for a repository usseg-export wrote, through the same check."""
    text_format = pytest.importorskip("google.protobuf.text_format")
    json_format = pytest.importorskip("google.protobuf.json_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from usseg.export.triton import config_pbtxt

    c = contract(input=InputSpec(height=H, width=W, batch=batch), output=output)
    parsed = text_format.Parse(config_pbtxt(c, "usseg"), model_config_pb2.ModelConfig())
    config = json_format.MessageToDict(parsed, preserving_proto_field_name=True)  # as the HTTP API sends it
    check_graph_io(*triton_tensors(config, "http://host/v2/models/usseg"), c, "http://host/v2/models/usseg")
    config["output"][0]["dims"][-1] = str(W + 1)
    with pytest.raises(GraphMismatchError, match=r"^http://host/v2/models/usseg: graph output 'output' .*width 25"):
        check_graph_io(*triton_tensors(config, "http://host"), c, "http://host/v2/models/usseg")


@pytest.mark.parametrize("config", [
    {"input": [{"name": "image", "dims": ["x"]}]},   # a dim that is no number
    {"input": [["image"]]},                          # a tensor that is no object
    {"input": [{"dims": [1]}]},                      # no name
    "config",
])
def test_malformed_triton_configs_are_refused(config):
    with pytest.raises(GraphMismatchError, match=r"^srv: the model config's tensors are malformed"):
        triton_tensors(config, "srv")


def test_tensor_info_reads_like_a_node_arg():
    inputs = [TensorInfo("image", [1, 1, H, W], "tensor(float)")]
    check_graph_io(inputs, [TensorInfo("output", [1, 4, H, W], "tensor(float)")], contract(), "m")
    with pytest.raises(GraphMismatchError, match="rank unknown, need 4"):
        check_graph_io(inputs, [TensorInfo("output", None, "tensor(float)")], contract(), "m")
