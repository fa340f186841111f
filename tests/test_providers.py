"""The provider policy (usseg.runtime.providers): a matrix of ONNX Runtime builds, model kinds and
device requests, and ONNX Runtime's own constraints written as cases. Each case names where in
ONNX Runtime's source or documentation the constraint comes from."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx_tiny import tiny_model

from usseg.runtime.providers import (
    CPU,
    CUDA,
    DISABLE_CPU_FALLBACK,
    EXACT_NOTE,
    TRT,
    TRT_LIBS_NOTE,
    DeviceRequest,
    ModelFacts,
    ProviderError,
    candidate_plans,
    failure_kind,
    parse_device,
    without_graph,
)

CPU_BUILD = ["AzureExecutionProvider", CPU]           # the onnxruntime wheel
CUDA_BUILD = [CUDA, CPU]                              # onnxruntime-gpu built without TensorRT
GPU_BUILD = [TRT, CUDA, CPU]                          # the onnxruntime-gpu wheel: TensorRT listed always
BUILDS = {"cpu-build": CPU_BUILD, "cuda-build": CUDA_BUILD, "gpu-build": GPU_BUILD}
MODELS = {"fp32": ModelFacts("fp32"), "fp16": ModelFacts("fp16"), "int8": ModelFacts("int8"),
          "in-graph": ModelFacts("fp32", exact=True)}


def plans(device, build, model="fp32", **kw):
    return candidate_plans(device, BUILDS[build], MODELS[model], cache_dir="/tmp/trt", hint="HINT", **kw)


def summary(plan):
    return (plan.expect, plan.cuda_graph, plan.names)


# -- the matrix: what each request gets, best plan first ----------------------------------------------
@pytest.mark.parametrize("device,build,model,expected", [
    # auto on a full GPU build: TensorRT with its own graph, then without, then CUDA (graph, no graph), then CPU
    ("auto", "gpu-build", "fp32", [(TRT, "tensorrt", [TRT, CUDA, CPU]), (TRT, None, [TRT, CUDA, CPU]),
                                   (CUDA, "cuda", [CUDA, CPU]), (CUDA, None, [CUDA, CPU]), (CPU, None, [CPU])]),
    # in-graph preprocessing needs exact float32 sums: never TensorRT (docs/gpu.md)
    ("auto", "gpu-build", "in-graph", [(CUDA, "cuda", [CUDA, CPU]), (CUDA, None, [CUDA, CPU]), (CPU, None, [CPU])]),
    ("auto", "cuda-build", "int8", [(CUDA, "cuda", [CUDA, CPU]), (CUDA, None, [CUDA, CPU]), (CPU, None, [CPU])]),
    ("auto", "cpu-build", "fp16", [(CPU, None, [CPU])]),
    ("cpu", "gpu-build", "fp32", [(CPU, None, [CPU])]),
    # an explicit GPU never ends on the CPU: no CPU-only plan in the list
    ("cuda", "gpu-build", "fp32", [(CUDA, "cuda", [CUDA, CPU]), (CUDA, None, [CUDA, CPU])]),
    ("cuda:1", "cuda-build", "in-graph", [(CUDA, "cuda", [CUDA, CPU]), (CUDA, None, [CUDA, CPU])]),
    ("tensorrt", "gpu-build", "fp16", [(TRT, "tensorrt", [TRT, CUDA, CPU]), (TRT, None, [TRT, CUDA, CPU])]),
])
def test_plans_for_each_build_model_and_request(device, build, model, expected):
    assert [summary(p) for p in plans(device, build, model)] == expected


@pytest.mark.parametrize("device,build,model,words", [
    ("cuda", "cpu-build", "fp32", "CUDAExecutionProvider is not in this ONNX Runtime build.*HINT"),
    ("tensorrt", "cuda-build", "fp32", "TensorrtExecutionProvider is not in this ONNX Runtime build"),
    ("tensorrt", "gpu-build", "in-graph", "use device 'cuda'"),
    ("gpu", "gpu-build", "fp32", "valid devices are auto"),
    ("cpu:1", "gpu-build", "fp32", "valid devices are"),
])
def test_requests_that_cannot_be_met_say_why(device, build, model, words):
    with pytest.raises(ProviderError, match=words):
        plans(device, build, model)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:2", "tensorrt", "tensorrt:1"])
@pytest.mark.parametrize("cpu_nodes", [True, False])
def test_onnxruntime_constraints_hold_in_every_plan(build, model, device, cpu_nodes):
    try:
        found = plans(device, build, model, cpu_nodes=cpu_nodes)
    except ProviderError:
        return  # the request cannot be met on this build (cases above)
    request = parse_device(device)
    for plan in found:
        names = plan.names
        cuda, trt = plan.options(CUDA), plan.options(TRT)
        # inference_session.cc (Initialize, CUDA graph check): with enable_cuda_graph the CUDA EP
        # fails the session unless all compute nodes are on CUDA or CPU (AreAllComputeNodesAssignedToCudaEp),
        # so it can never be on behind TensorRT.
        assert not (cuda.get("enable_cuda_graph") == "1" and TRT in names)
        # tensorrt_provider_options.h: trt_cuda_graph_enable is TensorRT's own capture; the plan says which one runs.
        assert (plan.cuda_graph == "tensorrt") == (trt.get("trt_cuda_graph_enable") == "1")
        assert (plan.cuda_graph == "cuda") == (cuda.get("enable_cuda_graph") == "1")
        # inference_session.cc: "Conflicting session configuration: explicitly added the CPU EP to the session,
        # but also disabled fallback to the CPU EP via session configuration options."
        assert not (CPU in names and (DISABLE_CPU_FALLBACK, "1") in plan.session_config)
        if plan.on_gpu:
            assert (CPU in names) == cpu_nodes
            # the device index reaches every GPU provider (CUDA EP / TensorRT EP docs: device_id)
            assert all(o["device_id"] == str(request.index) for n, o in plan.providers if n != CPU)
        # TensorRT EP docs, trt_fp16_enable: a precision change; only for fp16 models (or when asked)
        if trt:
            assert trt["trt_fp16_enable"] == ("1" if model == "fp16" else "0")
        # exact in-graph arithmetic: no TF32, cuDNN's heuristic algorithms, no TensorRT (CUDA EP docs:
        # use_tf32, cudnn_conv_algo_search)
        if model == "in-graph":
            assert TRT not in names
            if cuda:
                assert cuda["use_tf32"] == "0" and cuda["cudnn_conv_algo_search"] == "HEURISTIC"
        assert plan.expect == names[0]


def test_a_tensorrt_graph_plan_is_followed_by_the_same_plan_without_it():
    # inference_session.cc: with trt_cuda_graph_enable, every node of the main graph must be on TensorRT
    # (AreAllNodesInMainGraphAssignedToOneEp), else the session fails; the next plan keeps TensorRT without it.
    first, second = plans("auto", "gpu-build")[:2]
    assert first.cuda_graph == "tensorrt" and second.cuda_graph is None
    assert first.names == second.names and first.options(TRT)["trt_engine_cache_path"] == "/tmp/trt"


def test_fp16_can_be_asked_for_and_tensorrt_without_libraries_is_skipped_by_auto_only():
    assert plans("tensorrt", "gpu-build", fp16=True)[0].options(TRT)["trt_fp16_enable"] == "1"
    assert plans("tensorrt", "gpu-build", "fp16", fp16=False)[0].options(TRT)["trt_fp16_enable"] == "0"
    auto = plans("auto", "gpu-build", tensorrt_loadable=False)
    assert auto[0].expect == CUDA and TRT_LIBS_NOTE in auto[0].notes
    assert plans("tensorrt", "gpu-build", tensorrt_loadable=False)[0].expect == TRT
    assert EXACT_NOTE in plans("auto", "cpu-build", "in-graph")[0].notes


def test_no_cuda_graph_when_turned_off_and_without_graph_clears_both_flags():
    assert all(p.cuda_graph is None for p in plans("auto", "gpu-build", cuda_graph=False))
    for plan in plans("auto", "gpu-build"):
        bare = without_graph(plan)
        assert bare.cuda_graph is None and bare.names == plan.names
        assert bare.options(CUDA).get("enable_cuda_graph", "0") == "0"
        assert bare.options(TRT).get("trt_cuda_graph_enable", "0") == "0"


@pytest.mark.parametrize("text,expected", [
    ("auto", DeviceRequest("auto")), ("CPU", DeviceRequest("cpu")), ("cuda", DeviceRequest("cuda", 0)),
    ("cuda:3", DeviceRequest("cuda", 3)), (" tensorrt:1 ", DeviceRequest("tensorrt", 1)),
])
def test_device_syntax(text, expected):
    assert parse_device(text) == expected
    assert str(parse_device(str(expected))) == str(expected)


# -- failures as ONNX Runtime reports them ---------------------------------------------------------------
class InvalidProtobuf(Exception):
    """Named like onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf."""


@pytest.mark.parametrize("exc,kind", [
    # bfc_arena.cc / bfc_arena_test.cc: the arena's message
    (RuntimeError("BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 4096"), "oom"),
    # cuda_call.cc: "%s failure %d: %s ; GPU=%d ; ..." with cudaErrorMemoryAllocation = 2
    (RuntimeError("CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; file=x.cc ; line=1 ; expr=cudaMalloc"), "oom"),
    (RuntimeError("CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; expr=cublasCreate(&handle)"), "oom"),
    (MemoryError("std::bad_alloc"), "oom"),
    (InvalidProtobuf("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from m.onnx failed:Protobuf parsing failed."),
     "model"),
    # inference_session.cc: the CUDA-graph refusals are session failures of a provider choice
    (RuntimeError("This session cannot use the CUDA Graph feature as requested by the user as all compute graph "
                  "nodes have not been partitioned to the CUDA EP."), "provider"),
    # provider_bridge_ort.cc: TensorRT's provider library cannot load libnvinfer
    (RuntimeError("TryGetProviderInfo_TensorRT] libnvinfer.so.10: cannot open shared object file"), "provider"),
    (RuntimeError("CUDA failure 100: no CUDA-capable device is detected"), "provider"),
])
def test_failures_are_sorted_by_what_they_are_about(exc, kind):
    assert failure_kind(exc) == kind


# -- ONNX Runtime itself, on the CPU: the constraint the old graph_check broke -----------------------------
def test_onnxruntime_refuses_cpu_fallback_disabled_beside_an_explicit_cpu_provider(tmp_path):
    model = str(tiny_model(tmp_path / "m.onnx"))
    options = ort.SessionOptions()
    options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
    with pytest.raises(Exception, match="Conflicting session configuration"):
        ort.InferenceSession(model, options, providers=[CPU])
    # the engine's session for a cpu_nodes=False plan never lists the CPU with that entry
    from usseg.runtime.sessions import open_session

    plan = candidate_plans("cpu", CPU_BUILD, cpu_nodes=False)[0]
    session = open_session(model, plan)
    out = session.run(None, {"image": np.zeros((1, 1, 24, 32), np.float32)})[0]
    assert out.shape == (1, 4, 24, 32)


# -- the plans a Segmenter opens: its options reach the policy ---------------------------------------------
@pytest.mark.parametrize("fp16,precision,expected", [
    (True, "fp32", "1"),    # asked for: TensorRT in fp16 for an fp32 model
    (None, "fp32", "0"),    # not asked: the model's own precision
    (None, "fp16", "1"),
    (False, "fp16", "0"),   # refused even for an fp16 model
])
def test_the_segmenters_fp16_option_reaches_tensorrts_plan(tmp_path, monkeypatch, fp16, precision, expected):
    from onnx_tiny import FakeGpu

    gpu = FakeGpu(monkeypatch, available=GPU_BUILD)
    from usseg.runtime.segmenter import Segmenter

    seg = Segmenter(tiny_model(tmp_path / "m.onnx", precision=precision), device="tensorrt", fp16=fp16,
                    cache_dir=tmp_path / "trt")
    assert seg.provider == TRT and {p.options(TRT)["trt_fp16_enable"] for p in gpu.opened} == {expected}
