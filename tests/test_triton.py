"""The Triton model repository and the Triton client mode.

config.pbtxt is parsed with Triton's own ModelConfig protobuf (from tritonclient, the `triton`
extra: these tests need it installed and are never skipped). The client is tested against
FakeTriton below, a few KServe v2 HTTP endpoints in front of ONNX Runtime on 127.0.0.1: a fake,
not a real tritonserver.
"""

import json
import logging
import socket
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from usseg.export import triton as triton_export
from usseg.export.cli import main as export_main
from usseg.export.triton import TritonConfigError, config_pbtxt, validate_config, write_repository
from usseg.runtime.contract import METADATA_KEY, Contract
from usseg.runtime.infer import main as infer_main
from usseg.runtime.segmenter import Segmenter
from usseg.runtime.triton_client import TritonError, TritonSegmenter

ModelConfig = model_config_pb2.ModelConfig
KSERVE_DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64"}


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """exported(batch, output) -> the model folder of a Triton repository, exported once per module."""
    cache = {}

    def get(batch: str, output: str) -> Path:
        if (batch, output) not in cache:
            root = tmp_path_factory.mktemp(f"triton-{batch}-{output}")
            assert export_main([str(tiny_run / "best.pt"), "-o", str(root / "m.onnx"), "--output", output,
                                "--batch", batch, "--triton", str(root / "repo"), "--no-verify"]) == 0
            cache[batch, output] = root / "repo" / "usseg"
        return cache[batch, output]

    return get


def contract_of(onnx_path):
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    return Contract.from_json(meta[METADATA_KEY])


def graph_shape(value_info):
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("batch,output", [
    ("1", "logits"),        # the default export: fixed batch, class scores
    ("dynamic", "logits"),  # Triton batches requests itself
    ("1", "labels"),        # argmax in the graph, uint8 out
    ("dynamic", "labels"),
])
def test_config_parses_with_tritons_schema_and_matches_the_contract(exported, batch, output):
    folder = exported(batch, output)
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())
    contract = contract_of(folder / "1" / "model.onnx")
    spec = contract.input
    assert cfg.name == folder.name == "usseg" and cfg.platform == "onnxruntime_onnx"
    assert Contract.from_json(cfg.parameters[METADATA_KEY].string_value) == contract
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].kind == cfg.instance_group[0].KIND_AUTO
    lead = [] if batch == "dynamic" else [1]
    assert cfg.max_batch_size == (16 if batch == "dynamic" else 0)
    assert cfg.HasField("dynamic_batching") == (batch == "dynamic")
    (inp,), (out,) = cfg.input, cfg.output
    out_item = [spec.height, spec.width] if output == "labels" else [contract.num_classes, spec.height, spec.width]
    assert (inp.name, list(inp.dims)) == (spec.name, lead + [1, spec.height, spec.width])
    assert (out.name, list(out.dims)) == (contract.output_name, lead + out_item)
    assert model_config_pb2.DataType.Name(inp.data_type) == "TYPE_FP32"
    assert model_config_pb2.DataType.Name(out.data_type) == ("TYPE_UINT8" if output == "labels" else "TYPE_FP32")
    # The served graph has exactly these tensors (Triton refuses a config that disagrees with it).
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    batch_dim = [None] if batch == "dynamic" else []
    assert graph_shape(graph.input[0]) == batch_dim + list(inp.dims)
    assert graph_shape(graph.output[0]) == batch_dim + list(out.dims)
    assert graph.output[0].type.tensor_type.elem_type == (onnx.TensorProto.UINT8 if output == "labels"
                                                          else onnx.TensorProto.FLOAT)


def config_mutations():
    return [
        # (change to the written text, words in the error)
        (("instance_group [ { kind: KIND_AUTO } ]", "instance_group [ { kind: AUTO } ]"), "not a valid Triton model config"),
        (("max_batch_size: 0", "max_batch: 0"), "not a valid Triton model config"),
        (('name: "usseg"', 'name: "other"'), "name 'other', expected 'usseg'"),
        (('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'), "platform 'tensorrt_plan'"),
        (("data_type: TYPE_FP32", "data_type: TYPE_FP16"), "tensor 'image' declared as ('TYPE_FP16'"),
        (("dims: [ 1, 1, ", "dims: [ 1, 3, "), "tensor 'image' declared as"),
        (("max_batch_size: 0", "max_batch_size: 8"), "max_batch_size 8, expected 0"),
        (('key: "usseg.contract"', 'key: "contract"'), "no parameter 'usseg.contract'"),
        (('\\"output\\": \\"logits\\"', '\\"output\\": \\"probs\\"'), "does not read back as the model's contract"),
    ]


def test_validation_names_what_is_wrong(tiny_onnx):
    contract = contract_of(tiny_onnx)
    good = config_pbtxt(contract, "usseg")
    validate_config(good, contract, "usseg", ModelConfig)
    for (old, new), words in config_mutations():
        assert old in good, old
        with pytest.raises(TritonConfigError, match=words.replace("(", r"\(")):
            validate_config(good.replace(old, new, 1), contract, "usseg", ModelConfig)


def test_an_invalid_config_fails_the_export_and_writes_no_repository(tiny_run, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(triton_export, "config_pbtxt", lambda c, name: "name: 'usseg' dims: [ 1 ]\n")
    repo = tmp_path / "repo"
    assert export_main([str(tiny_run / "best.pt"), "-o", str(tmp_path / "m.onnx"), "--triton", str(repo),
                        "--no-verify"]) == 2
    assert "config.pbtxt is not a valid Triton model config" in caplog.text
    assert not repo.exists()  # the folder made for this export is removed again: nothing was written


def test_without_tritonclient_validation_is_skipped_and_logged(tiny_onnx, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # makes the import fail as if not installed
    caplog.set_level(logging.INFO, logger="usseg.export")
    folder = write_repository(tiny_onnx, contract_of(tiny_onnx), tmp_path / "repo")
    assert "Triton config validation skipped: tritonclient[grpc] is not installed" in caplog.text
    assert (folder / "config.pbtxt").is_file()


# -- the client against a fake server -----------------------------------------------------------

class FakeTriton:
    """Just enough of Triton's HTTP API (KServe v2) for tritonclient.http: model ready, model
    config and infer with binary tensors, the repository's model.onnx run by ONNX Runtime.

    Loopback only; the serving loop is bounded by ``lifetime_s`` and stops itself then, or at
    ``stop()``. ``config_edit`` changes the config it serves, to test the client's checks.
    """

    def __init__(self, folder: Path, config_edit=None, lifetime_s: float = 120.0):
        cfg = text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())
        self.name = cfg.name
        self.config = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
        if config_edit:
            config_edit(self.config)
        self.session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.1
        self.url = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.inferences = 0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            self.httpd.handle_request()
        self.httpd.server_close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def infer(self, body: bytes, header_len: int) -> tuple[dict, bytes]:
        request = json.loads(body[:header_len])
        (tensor,) = request["inputs"]
        data = np.frombuffer(body[header_len:header_len + tensor["parameters"]["binary_data_size"]], np.float32)
        x = data.reshape(tensor["shape"])
        (dims,) = [[int(d) for d in t["dims"]] for t in self.config["input"]]
        max_batch = int(self.config.get("max_batch_size", 0))
        if (list(x.shape[1:]) != dims or x.shape[0] > max_batch) if max_batch else list(x.shape) != dims:
            raise ValueError(f"input shape {list(x.shape)} does not fit dims {dims}, max_batch_size {max_batch}")
        names = [o["name"] for o in request.get("outputs", [])] or None
        outputs = self.session.run(names, {tensor["name"]: x})
        self.inferences += 1
        header = {"model_name": self.name, "outputs": []}
        blobs = []
        for meta, y in zip(names or [o.name for o in self.session.get_outputs()], outputs):
            blob = np.ascontiguousarray(y).tobytes()
            header["outputs"].append({"name": meta, "datatype": KSERVE_DTYPES[y.dtype], "shape": list(y.shape),
                                      "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        return header, b"".join(blobs)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection ends by itself

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", header_len=None):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if header_len is not None:
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Inference-Header-Content-Length", str(header_len))
                elif body:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def error(self, status, message):
                self.reply(status, json.dumps({"error": message}).encode())

            def do_GET(self):
                if self.path == f"/v2/models/{fake.name}/ready":
                    self.reply(200)
                elif self.path == f"/v2/models/{fake.name}/config":
                    self.reply(200, json.dumps(fake.config).encode())
                else:
                    self.error(400, f"unknown path or model: {self.path}")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != f"/v2/models/{fake.name}/infer":
                    return self.error(400, f"unknown path or model: {self.path}")
                try:
                    header, blob = fake.infer(body, int(self.headers["Inference-Header-Content-Length"]))
                except (KeyError, ValueError) as exc:
                    return self.error(400, str(exc))
                text = json.dumps(header).encode()
                self.reply(200, text + blob, header_len=len(text))

        return Handler


@pytest.fixture(scope="module")
def frames():
    from usseg.train.phantom import PhantomConfig, generate_frame

    return [generate_frame(PhantomConfig(height=240, width=300), seed=11, index=i)[0] for i in range(4)]


def assert_same_result(remote, local):
    assert np.array_equal(remote.labels, local.labels)
    assert remote.masks.keys() == local.masks.keys()
    assert all(np.array_equal(remote.masks[k], local.masks[k]) for k in local.masks)
    assert remote.geometry() == local.geometry()


@pytest.mark.parametrize("batch,output", [
    ("1", "logits"),        # max_batch_size 0: the client sends the batch dim itself
    ("dynamic", "labels"),  # max_batch_size 16, uint8 labels back
])
def test_triton_segmenter_equals_the_local_segmenter(exported, frames, batch, output):
    folder = exported(batch, output)
    local = Segmenter(folder / "1" / "model.onnx", device="cpu", spacing_mm=0.2)
    with FakeTriton(folder) as server, TritonSegmenter(f"http://{server.url}", spacing_mm=0.2) as remote:
        assert remote.contract == local.contract
        for frame in frames + [cv2.resize(frames[0], (97, 333))]:
            result = remote(frame)
            assert_same_result(result, local(frame))
            assert set(result.timings) == {"preprocess", "inference", "postprocess", "total"}
        assert server.inferences == len(frames) + 1  # every frame went through the server


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_contract(config):
    config["parameters"].pop(METADATA_KEY)


def wrong_dims(config):
    config["input"][0]["dims"] = [1, 1, 32, 32]


@pytest.mark.parametrize("config_edit,name,words", [
    (None, "other", "the model is not ready"),                                # a model the server does not have
    (drop_contract, "usseg", "no parameter 'usseg.contract'"),                # a repository not written by usseg
    (wrong_dims, "usseg", "height 32, the contract says 64"),                 # config and contract disagree
])
def test_client_refuses_a_model_it_cannot_use(exported, config_edit, name, words):
    with FakeTriton(exported("1", "logits"), config_edit) as server:
        with pytest.raises(TritonError, match=words):
            TritonSegmenter(server.url, name)


def test_a_reply_of_another_shape_than_the_config_says_is_refused(exported, frames):
    with FakeTriton(exported("1", "logits")) as server, TritonSegmenter(server.url) as remote:
        served = server.session
        server.session = types.SimpleNamespace(  # a server whose replies lose their last row
            run=lambda names, feed: [y[..., :-1, :] for y in served.run(names, feed)], get_outputs=served.get_outputs)
        with pytest.raises(TritonError, match=r"the reply's 'output' is \[1, 4, 63, \d+\], the model config says "
                                              r"\[1, 4, 64, \d+\]"):
            remote(frames[0])


def test_client_says_when_the_server_is_unreachable():
    with pytest.raises(TritonError, match="cannot reach the Triton server"):
        TritonSegmenter(f"127.0.0.1:{unused_port()}", timeout_s=5)
    with pytest.raises(ValueError, match="scheme 'grpc' is not supported"):
        TritonSegmenter("grpc://127.0.0.1:8001")


def test_infer_cli_with_triton_writes_what_the_local_model_writes(exported, frames, tmp_path, capsys, caplog):
    folder = exported("1", "logits")
    images = tmp_path / "in"
    images.mkdir()
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(images / f"f{i}.png"), f)
    local, remote = tmp_path / "local", tmp_path / "remote"
    common = [str(images), "--save-masks", "--quiet", "--spacing", "0.2"]
    assert infer_main(["--model", str(folder / "1" / "model.onnx"), "--device", "cpu", "--out", str(local)] + common) == 0
    with FakeTriton(folder) as server:
        assert infer_main(["--triton", server.url, "--model-name", "usseg", "--out", str(remote)] + common) == 0
        assert server.inferences == 3
        assert infer_main(["--triton", server.url, "--device", "cpu", "--out", str(tmp_path / "x")] + common) == 2
    assert "with --triton the server chooses it" in caplog.text
    docs = [json.loads((d / "results.json").read_text()) for d in (local, remote)]
    assert docs[1]["provider"] == f"triton {server.url}" and docs[1]["classes"] == docs[0]["classes"]
    strip = [[{k: v for k, v in r.items() if k != "timings_ms"} for r in d["frames"]] for d in docs]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    for i in range(3):
        masks = [cv2.imread(str(d / f"f{i}_mask.png"), cv2.IMREAD_UNCHANGED) for d in (local, remote)]
        assert np.array_equal(*masks)
    assert "on triton 127.0.0.1:" in capsys.readouterr().out
