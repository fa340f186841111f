"""Tiny ONNX models with a usseg contract, built with onnx.helper (no training), and a stand-in for
ONNX Runtime's CUDA and TensorRT providers where no GPU exists.

The stand-in (``FakeGpu``) runs the real model on ONNX Runtime's CPU provider and reproduces the
GPU behaviours the engine has to cope with, each from ONNX Runtime's source:
- CUDA-graph capture per thread, on the third run of that thread, replays afterwards
  (cuda_execution_provider.h: PerThreadContext, min_num_runs_before_cuda_graph_capture_ = 2);
- the provider options a session reports (``InferenceSession.get_provider_options``);
- the failures: TensorRT's libraries missing, a session rebuilt without our options, running out
  of memory, a replay that does not read the input.
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from usseg.runtime.contract import METADATA_KEY, SPINE_CLASSES, Contract, FrameSpec, InputSpec, PostprocessSpec
from usseg.runtime.preprocess import get_recipe

CLASSES = ("background", "low", "mid", "high")


def tiny_model(path, *, height=24, width=32, output="logits", frame=None, batch=1, precision="fp32",
               recipe="none", asymmetric=False, spine=False):
    """A 1x1 (or, ``asymmetric``, 1x3) convolution whose argmax bands the intensity into 4 classes.

    ``frame``: (h, w) of a raw uint8 frame input (in-graph "preprocessing": resize by slicing is not
    needed when frame == input size, so only a cast and a scale are in the graph). ``spine``: the
    classes are the spine's, with its post-processing.
    """
    n = "N" if batch is None else batch
    nodes, inits = [], []
    weights = np.array([0.0, 1.0, 2.0, 3.0], np.float32).reshape(4, 1, 1, 1)
    if asymmetric:
        weights = np.concatenate([np.zeros((4, 1, 1, 2), np.float32), weights], axis=3)
        weights[:, 0, 0, 0] = [0.0, 0.5, -0.5, 0.2]
    inits += [numpy_helper.from_array(weights, "w"),
              numpy_helper.from_array(np.array([0.0, -0.3, -0.8, -1.5], np.float32), "b")]
    if frame is None:
        inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 1, height, width])
        x = "image"
    else:
        inp = helper.make_tensor_value_info("frame", TensorProto.UINT8, [n, 1, frame[0], frame[1]])
        inits.append(numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"))
        nodes += [helper.make_node("Cast", ["frame"], ["f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["f", "scale"], ["x"])]
        x = "x"
    pads = [0, 1, 0, 1] if asymmetric else [0, 0, 0, 0]
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["scores"], pads=pads))
    if output == "labels":
        nodes += [helper.make_node("ArgMax", ["scores"], ["idx"], axis=1, keepdims=0),
                  helper.make_node("Cast", ["idx"], ["output"], to=TensorProto.UINT8)]
        out = helper.make_tensor_value_info("output", TensorProto.UINT8, [n, height, width])
    else:
        nodes.append(helper.make_node("Identity", ["scores"], ["output"]))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, 4, height, width])
    graph = helper.make_graph(nodes, "tiny", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    contract = Contract(classes=SPINE_CLASSES if spine else CLASSES,
                        input=InputSpec(height=height, width=width, batch=batch), recipe=get_recipe(recipe),
                        output=output, postprocess=PostprocessSpec(kind="spine" if spine else "none"),
                        provenance={"precision": precision},
                        frame=None if frame is None else FrameSpec(height=frame[0], width=frame[1]))
    onnx.helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    onnx.save(model, str(path))
    return path


# -- a GPU that is not there ------------------------------------------------------------------------
class FakeDeviceValue:
    """A "device" buffer: host memory behind the OrtValue methods the engine uses."""

    def __init__(self, shape, dtype):
        self.array = np.zeros(shape, dtype)

    def update_inplace(self, data):
        np.copyto(self.array, np.asarray(data).reshape(self.array.shape))

    def numpy(self):
        return self.array.copy()

    def data_ptr(self):
        return self.array.ctypes.data

    def shape(self):
        return list(self.array.shape)


class FakeBinding:
    def __init__(self):
        self.inputs, self.outputs = {}, {}

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value

    def bind_ortvalue_output(self, name, value):
        self.outputs[name] = value


class FakeGpu:
    """Installs itself into usseg.runtime.engine (and buffers) with monkeypatch; see the module
    docstring. ``world`` switches failures on: trt_missing, rebuild, graph_refused, oom_open,
    oom_run (after that many runs), stale_replay."""

    def __init__(self, monkeypatch, available=("CUDAExecutionProvider", "CPUExecutionProvider"), **world):
        from usseg.runtime import buffers, engine

        self.available, self.world = list(available), world
        self.sessions, self.runs, self.captures, self.opened = [], [], [], []
        self.lock = threading.Lock()
        monkeypatch.setattr(engine, "available_providers", lambda: list(self.available))
        monkeypatch.setattr(engine, "tensorrt_loadable", lambda: not world.get("trt_missing", False))
        monkeypatch.setattr(buffers, "device_value", lambda shape, dtype, device_id: FakeDeviceValue(shape, dtype))
        real_open = engine.open_session
        monkeypatch.setattr(engine, "open_session", lambda model, plan, threads=None, optimize=True:
                            self.open(real_open, model, plan, threads, optimize))

    def open(self, real_open, model, plan, threads, optimize):
        from usseg.runtime.sessions import CPU_PLAN

        self.opened.append(plan)
        names = plan.names
        if "TensorrtExecutionProvider" in names and self.world.get("trt_missing"):
            raise RuntimeError("/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1539 "
                               "TryGetProviderInfo_TensorRT] libnvinfer.so.10: cannot open shared object file")
        if plan.cuda_graph == "cuda" and self.world.get("graph_refused"):
            raise RuntimeError("This session cannot use the CUDA Graph feature as requested by the user as all "
                               "compute graph nodes have not been partitioned to the CUDA EP.")
        if self.world.get("oom_open") and plan.on_gpu:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: "
                               "BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 8")
        cpu = real_open(model, CPU_PLAN, threads, optimize)
        if not plan.on_gpu:
            return cpu
        session = FakeSession(self, cpu, plan)
        self.sessions.append(session)
        return session


class FakeSession:
    def __init__(self, gpu, cpu, plan):
        self.gpu, self.cpu, self.plan = gpu, cpu, plan
        self.per_thread = {}  # thread id -> regular runs, then "captured"
        rebuilt = gpu.world.get("rebuild") and plan.cuda_graph
        self.providers = [n for n in plan.names if not (rebuilt and n == "TensorrtExecutionProvider")]
        self.options = {n: dict(o) for n, o in plan.providers}
        if rebuilt:  # ORT's own fallback: the same providers, default options
            for opts in self.options.values():
                opts.update({k: "0" for k in ("enable_cuda_graph", "trt_cuda_graph_enable") if k in opts})
        self.captured = None

    def get_providers(self):
        return list(self.providers)

    def get_provider_options(self):
        return {n: dict(o) for n, o in self.options.items()}

    def __getattr__(self, name):  # metadata, inputs, outputs: the real model's
        return getattr(self.cpu, name)

    def io_binding(self):
        return FakeBinding()

    def run_with_iobinding(self, binding):
        gpu = self.gpu
        with gpu.lock:
            gpu.runs.append(threading.get_ident())
            limit = gpu.world.get("oom_run")
            if limit is not None and len(gpu.runs) > limit:
                raise RuntimeError("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; expr=cudaMalloc(&p, size);")
        tid = threading.get_ident()
        count = self.per_thread.get(tid, 0)
        graph = self.plan.cuda_graph is not None and self.options[self.plan.expect].get(
            "enable_cuda_graph", self.options[self.plan.expect].get("trt_cuda_graph_enable")) == "1"
        if graph and count == "captured":
            if gpu.world.get("stale_replay"):
                return  # a replay that reads nothing new leaves the output as it was
        elif graph and count >= 2:
            self.per_thread[tid] = "captured"
            gpu.captures.append(tid)
        elif graph:
            self.per_thread[tid] = count + 1
        (name, value), = binding.inputs.items()
        (out_name, out_value), = binding.outputs.items()
        result = self.cpu.run([out_name], {name: value.array})[0]
        np.copyto(out_value.array, result.reshape(out_value.array.shape), casting="unsafe")


def cuda_device_present() -> bool:
    """A real CUDA device and onnxruntime-gpu (for the tests marked gpu)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ort.OrtValue.ortvalue_from_shape_and_type([1], np.float32, "cuda", 0)
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable device
        return False
