"""The engine (session factory, provider check, IO binding, buffers, capture, thread), the
preparers, flip TTA, and the order in which the Segmenter checks its options: on the CPU for real,
and on CUDA/TensorRT through the stand-in of tests/onnx_tiny.py. Tests marked gpu run the same
checks on a real CUDA device."""

import sys
import threading
import types
from typing import ClassVar

import numpy as np
import onnxruntime as ort
import pytest
from onnx_tiny import FakeGpu, cuda_device_present, tiny_model

from usseg.runtime import buffers, engine, sessions
from usseg.runtime.errors import UsageError
from usseg.runtime.preprocess import preprocess
from usseg.runtime.providers import CPU, CUDA, TRT, ModelError, OutOfMemoryError, ProviderError
from usseg.runtime.segmenter import Segmenter

GPU_BOTH = (TRT, CUDA, CPU)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "logits": tiny_model(root / "logits.onnx"),
        "labels": tiny_model(root / "labels.onnx", output="labels"),
        "fp16": tiny_model(root / "fp16.onnx", precision="fp16"),
        "graph": tiny_model(root / "graph.onnx", frame=(24, 32), output="labels"),
        "dynamic": tiny_model(root / "dynamic.onnx", batch=None),
        "asym": tiny_model(root / "asym.onnx", asymmetric=True),
        "asym-dynamic": tiny_model(root / "asym-dynamic.onnx", asymmetric=True, batch=None),
    }


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(3)]


def reference_labels(path, frame, flip=False):
    """The frame through plain ONNX Runtime on the CPU (optionally the mirror-averaged scores)."""
    from usseg.runtime.decode import argmax_labels

    session = ort.InferenceSession(str(path), providers=[CPU])
    x = preprocess(frame, Segmenter(path, device="cpu").contract.recipe, 24, 32)[0]
    scores = session.run(None, {"image": x[None, None]})[0][0]
    if flip:
        mx = preprocess(np.ascontiguousarray(frame[:, ::-1]), Segmenter(path, device="cpu").contract.recipe, 24, 32)[0]
        mirrored = session.run(None, {"image": mx[None, None]})[0][0]
        scores = 0.5 * (scores + mirrored[..., ::-1])
    return argmax_labels(np.ascontiguousarray(scores, np.float32), np.zeros((24, 32), np.uint8))


# -- the session factory -------------------------------------------------------------------------------
def test_sessions_are_made_without_onnxruntimes_silent_fallback(models, monkeypatch):
    # onnxruntime_inference_collection.py: on a ValueError/RuntimeError at creation, InferenceSession
    # prints "EP Error" and rebuilds with default providers and none of our options unless it is
    # created with enable_fallback=0.
    seen = {}
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sessions.ort, "InferenceSession", spy)
    session = sessions.open_session(models["logits"], sessions.CPU_PLAN)
    assert seen["enable_fallback"] == 0 and session.get_providers() == [CPU]


def test_cpu_engine_binds_host_buffers_and_reports_itself(models, frames):
    seg = Segmenter(models["logits"], device="cpu")
    assert seg.preprocessing == "host" and not seg.cuda_graph and seg.provider == CPU
    for frame in frames:
        np.testing.assert_array_equal(seg(frame).labels, reference_labels(models["logits"], frame))
    info = seg.model_info()
    assert info["provider"] == CPU and info["device"] == "cpu" and info["cuda_graph"] is False
    assert info["classes"] == ["background", "low", "mid", "high"] and info["recipe"]["name"] == "none"
    assert len(info["sha256"]) == 64 and info["onnxruntime"] == ort.__version__
    assert "preprocessing=host" in repr(seg)


# -- CUDA through the stand-in -------------------------------------------------------------------------
def test_cuda_graph_is_captured_verified_and_replayed_on_one_thread(models, frames, monkeypatch):
    gpu = FakeGpu(monkeypatch)
    seg = Segmenter(models["logits"], device="cuda")
    assert seg.provider == CUDA and seg.cuda_graph and seg.model_info()["capture_verified"] is True
    assert len(gpu.captures) == 1
    results = {}
    worker = threading.Thread(target=lambda: results.update(r=seg(frames[0])))  # as a stream's worker would
    worker.start()
    worker.join()
    main = seg(frames[1])
    np.testing.assert_array_equal(results["r"].labels, reference_labels(models["logits"], frames[0]))
    np.testing.assert_array_equal(main.labels, reference_labels(models["logits"], frames[1]))
    # Every session call ran on the engine's own thread: one capture, no second one on the caller's thread.
    assert len(set(gpu.runs)) == 1 and gpu.runs[0] != threading.get_ident() and len(gpu.captures) == 1


def test_cuda_graph_refused_falls_back_inside_set_up(models, frames, monkeypatch):
    FakeGpu(monkeypatch, graph_refused=True)
    seg = Segmenter(models["logits"], device="cuda")
    assert seg.provider == CUDA and not seg.cuda_graph
    assert "cannot use the CUDA Graph feature" in " ".join(seg.model_info()["fallbacks"])
    np.testing.assert_array_equal(seg(frames[0]).labels, reference_labels(models["logits"], frames[0]))


def test_a_replay_that_ignores_new_input_is_caught_before_the_first_frame(models, frames, monkeypatch):
    FakeGpu(monkeypatch, stale_replay=True)
    seg = Segmenter(models["logits"], device="cuda")
    assert not seg.cuda_graph and "replayed CUDA graph" in " ".join(seg.model_info()["fallbacks"])
    np.testing.assert_array_equal(seg(frames[2]).labels, reference_labels(models["logits"], frames[2]))


def test_a_silent_rebuild_without_our_options_is_detected(models, monkeypatch):
    FakeGpu(monkeypatch, rebuild=True)
    seg = Segmenter(models["logits"], device="cuda")
    assert not seg.cuda_graph
    assert "enable_cuda_graph '0' instead of '1'" in " ".join(seg.model_info()["fallbacks"])


@pytest.mark.parametrize("device,expected,fallback_words", [
    # auto: TensorRT listed but libnvinfer missing (a plain onnxruntime-gpu install) -> CUDA, with a CUDA graph
    ("auto", CUDA, None),
    # explicit tensorrt: no quiet change of device; the error says why
    ("tensorrt", ProviderError, "libnvinfer"),
])
def test_tensorrt_without_its_libraries(models, monkeypatch, device, expected, fallback_words):
    gpu = FakeGpu(monkeypatch, available=GPU_BOTH, trt_missing=True)
    if expected is ProviderError:
        with pytest.raises(ProviderError, match=fallback_words):
            Segmenter(models["logits"], device=device)
        return
    seg = Segmenter(models["logits"], device=device)
    assert seg.provider == expected and seg.cuda_graph
    assert all(TRT not in p.names for p in gpu.opened)  # skipped before any session: no ORT error banner


def test_tensorrt_runs_the_graph_with_its_own_cuda_graph_and_model_precision(models, monkeypatch):
    gpu = FakeGpu(monkeypatch, available=GPU_BOTH)
    fp32 = Segmenter(models["logits"], device="tensorrt")
    assert fp32.provider == TRT and fp32.cuda_graph
    trt, cuda = gpu.opened[-1].options(TRT), gpu.opened[-1].options(CUDA)
    assert trt["trt_cuda_graph_enable"] == "1" and cuda["enable_cuda_graph"] == "0"
    assert trt["trt_fp16_enable"] == "0"  # a verified fp32 model stays fp32
    Segmenter(models["fp16"], device="tensorrt:1")
    assert gpu.opened[-1].options(TRT)["trt_fp16_enable"] == "1" and gpu.opened[-1].device_id == 1


def test_out_of_memory_is_its_own_error(models, frames, monkeypatch):
    FakeGpu(monkeypatch, oom_open=True)
    with pytest.raises(OutOfMemoryError, match="Failed to allocate memory"):
        Segmenter(models["logits"], device="cuda")
    monkeypatch.undo()
    FakeGpu(monkeypatch, oom_run=12)
    seg = Segmenter(models["logits"], device="cuda")
    with pytest.raises(OutOfMemoryError, match="CUDA failure 2"):
        for frame in frames * 5:
            seg(frame)


def test_gpu_buffers_are_page_locked_when_cudart_loads(models, monkeypatch):
    registered = []

    class FakeCudart(buffers.CudaRuntime):
        def __init__(self):
            self.lib = types.SimpleNamespace(cudaHostRegister=lambda p, n, f: registered.append((p.value, n.value)) or 0,
                                             cudaHostUnregister=lambda p: 0)

    FakeGpu(monkeypatch)
    monkeypatch.setattr(buffers, "cuda_runtime", FakeCudart)
    seg = Segmenter(models["logits"], device="cuda")
    info = seg.model_info()
    assert info["pinned_host_buffers"] is True and info["readback"] == "numpy"
    host_in = seg.engine.buffers(1).host_in
    assert (host_in.ctypes.data, host_in.nbytes) in registered and host_in.ctypes.data % 4096 == 0
    monkeypatch.setattr(buffers, "cuda_runtime", lambda: types.SimpleNamespace(register=lambda a: False))
    assert Segmenter(models["logits"], device="cuda").model_info()["pinned_host_buffers"] is False


def test_multi_frame_mode_uses_a_second_session_without_graph(models, frames, monkeypatch):
    gpu = FakeGpu(monkeypatch)
    seg = Segmenter(models["dynamic"], device="cuda")
    batched = seg.batch(frames)
    assert gpu.opened[-1].cuda_graph is None and seg.cuda_graph
    for frame, result in zip(frames, batched):
        np.testing.assert_array_equal(result.labels, seg(frame).labels)


# -- preprocessing paths ---------------------------------------------------------------------------------
class FakeFusedRecipe:
    """The fused kernels' interface; writes what the host path writes, at the device address it is
    given, and records the stream it was made for, each call's frame count and where it wrote,
    and whether each call waited for the stream."""

    made: ClassVar[list] = []
    waits: ClassVar[list] = []
    calls: ClassVar[list] = []

    def __init__(self, recipe, frame_hw, input_hw, stream=None):
        self.recipe, self.frame_hw, self.input_hw, self.stream = recipe, frame_hw, input_hw, stream
        FakeFusedRecipe.made.append(frame_hw)

    @staticmethod
    def supports(recipe, frame_hw=None, input_hw=None):
        if recipe.name != "none":
            return "only the recipe 'none' here"
        return "frames too small" if frame_hw is not None and frame_hw[0] < 16 else None

    def run_batch(self, frames, out, stream=None, synchronize=True):
        address = out.__cuda_array_interface__["data"][0]
        assert out.__cuda_array_interface__["shape"] == (len(frames), *self.input_hw)
        prepared = [preprocess(frame, self.recipe, *self.input_hw) for frame in frames]
        x = np.stack([p[0] for p in prepared])
        view = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * x.size).from_address(address))
        view[:] = x.ravel()
        FakeFusedRecipe.waits.append(synchronize)
        FakeFusedRecipe.calls.append((self.frame_hw, len(frames), address))
        if synchronize and self.stream is not None:
            self.stream.synchronize()
        return [p[1] for p in prepared]


class FakeStream:
    """A CUDA stream as Numba hands it out: ``int(stream)`` is its address; waits are counted."""

    def __init__(self, address):
        self.address, self.waits = address, 0

    def __int__(self):
        return self.address

    def synchronize(self):
        self.waits += 1


class FakeDeviceArray:
    """A device array over someone else's memory, described by the CUDA array interface."""

    def __init__(self, address, shape, dtype):
        self.__cuda_array_interface__ = {"data": (int(address), False), "shape": tuple(shape),
                                         "typestr": np.dtype(dtype).str, "strides": None, "version": 3}


@pytest.fixture
def fused_module(monkeypatch):
    module = types.ModuleType("usseg.runtime.cuda")
    module.FusedRecipe = FakeFusedRecipe
    module.unavailable_reason = lambda: None
    module.device_array_from_pointer = FakeDeviceArray
    module.compute_stream = lambda: None  # Numba's simulator: no stream to share
    monkeypatch.setitem(sys.modules, "usseg.runtime.cuda", module)
    FakeFusedRecipe.made, FakeFusedRecipe.waits, FakeFusedRecipe.calls = [], [], []
    return module


def test_fused_preprocessing_is_chosen_on_cuda_and_fills_the_bound_input(models, frames, monkeypatch, fused_module):
    FakeGpu(monkeypatch)
    seg = Segmenter(models["logits"], device="cuda")
    assert seg.preprocessing == "fused-cuda" and "preprocessing=fused-cuda" in repr(seg)
    for frame in frames:
        np.testing.assert_array_equal(seg(frame).labels, reference_labels(models["logits"], frame))
    assert FakeFusedRecipe.made == [(24, 32)]  # one kernel set per frame size
    small = frames[0][:12, :16]  # a size the kernels refuse: this frame goes the host path
    np.testing.assert_array_equal(seg(small).labels, Segmenter(models["logits"], device="cpu")(small).labels)
    assert Segmenter(models["logits"], device="cuda", preprocess="host").preprocessing == "host"
    assert Segmenter(models["logits"], device="cuda:1").preprocessing == "host"  # Numba's device is GPU 0
    dynamic = Segmenter(models["dynamic"], device="cuda")
    for frame, result in zip(frames, dynamic.batch(frames)):
        np.testing.assert_array_equal(result.labels, reference_labels(models["logits"], frame))


def test_multi_frame_call_prepares_each_run_of_one_frame_size_in_one_kernel_call(models, frames, monkeypatch,
                                                                                 fused_module):
    """N frames of one size: one run_batch at the first frame's input; frames of another size
    between them split the call into runs, each at its own frames' place in the device input."""
    FakeGpu(monkeypatch)
    seg = Segmenter(models["dynamic"], device="cuda")
    wide = np.ascontiguousarray(np.repeat(frames[1], 2, axis=1))  # 24x64: another kernel set
    batch = [frames[0], frames[1], frames[2], wide, frames[0]]
    host = Segmenter(models["dynamic"], device="cpu")
    for frame, result in zip(batch, seg.batch(batch)):
        np.testing.assert_array_equal(result.labels, host(frame).labels)
    base, stride = FakeFusedRecipe.calls[0][2], 24 * 32 * 4
    assert [(hw, n, address - base) for hw, n, address in FakeFusedRecipe.calls] == [
        ((24, 32), 3, 0), ((24, 64), 1, 3 * stride), ((24, 32), 1, 4 * stride)]
    FakeFusedRecipe.calls.clear()
    seg.batch(frames)
    assert [n for _, n, _ in FakeFusedRecipe.calls] == [3]


def test_kernels_and_graph_share_one_stream_and_only_the_readback_waits(models, frames, monkeypatch,
                                                                       fused_module):
    """The CUDA provider is given the kernels' stream as user_compute_stream, in every session
    (the multi-frame one too), and the kernels then return without waiting for it."""
    gpu = FakeGpu(monkeypatch)
    stream = FakeStream(0x7F3A_0000_1200)
    fused_module.compute_stream = lambda: stream
    seg = Segmenter(models["dynamic"], device="cuda")
    for frame in frames:
        np.testing.assert_array_equal(seg(frame).labels, reference_labels(models["logits"], frame))
    for frame, result in zip(frames, seg.batch(frames)):
        np.testing.assert_array_equal(result.labels, reference_labels(models["logits"], frame))
    on_gpu = [p for p in gpu.opened if p.on_gpu]  # (the references open CPU sessions)
    assert len(on_gpu) == 2 and all(p.options(CUDA)["user_compute_stream"] == str(0x7F3A_0000_1200) for p in on_gpu)
    assert seg.model_info()["shared_compute_stream"] is True
    assert all(k.stream is stream for k in seg.preparer._kernels.values())
    assert FakeFusedRecipe.waits == [False] * 4 and stream.waits == 0  # 3 frames one by one, then 3 in one call
    assert [n for _, n, _ in FakeFusedRecipe.calls] == [1, 1, 1, 3]


@pytest.mark.parametrize("case", ["simulator", "not reported back", "tensorrt"])
def test_kernels_wait_for_their_stream_where_the_session_does_not_share_it(models, frames, monkeypatch,
                                                                          fused_module, case):
    gpu = FakeGpu(monkeypatch, available=GPU_BOTH if case == "tensorrt" else (CUDA, CPU),
                  stream_dropped=case == "not reported back")
    stream = FakeStream(0x7F3A_0000_1200)
    fused_module.compute_stream = lambda: None if case == "simulator" else stream
    seg = Segmenter(models["logits"], device="tensorrt" if case == "tensorrt" else "cuda")
    np.testing.assert_array_equal(seg(frames[0]).labels, reference_labels(models["logits"], frames[0]))
    given = [p.options(CUDA).get("user_compute_stream") for p in gpu.opened if p.on_gpu]
    assert given == ([None] if case in ("simulator", "tensorrt") else [str(0x7F3A_0000_1200)])
    assert seg.model_info()["shared_compute_stream"] is False
    assert FakeFusedRecipe.waits == [True]
    assert stream.waits == (0 if case == "simulator" else 1)


def test_multi_frame_mode_finishes_frames_side_by_side_in_order(models):
    """Post-processing of one multi-frame call runs on ``threads`` threads at once (each call
    below waits for a second one to arrive: one thread alone would break the barrier), and the
    results come back in frame order, equal to frame-by-frame ones."""
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(6)]
    barrier, threads = threading.Barrier(2, timeout=30), set()
    dynamic = Segmenter(models["dynamic"], device="cpu", threads=2)
    real_finisher = dynamic.finisher

    def finish_in_pairs(*args):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return real_finisher(*args)

    dynamic.finisher = finish_in_pairs
    batched = dynamic.batch(frames)
    dynamic.finisher = real_finisher
    assert len(threads) == 2 and all(name.startswith("usseg-post") for name in threads)
    single = Segmenter(models["logits"], device="cpu")
    for frame, result in zip(frames, batched):
        one = single(frame)
        np.testing.assert_array_equal(result.labels, one.labels)
        assert result.lines.keys() == one.lines.keys()
        for name, pts in one.lines.items():
            assert (pts is None and result.lines[name] is None) or np.array_equal(pts, result.lines[name])
    # the order check means something: the frames' label maps differ from one another
    assert len({r.labels.tobytes() for r in batched}) == len(frames)
    single.close()
    dynamic.close()
    assert dynamic._post_pool is None


@pytest.fixture
def sessions_opened(monkeypatch):
    """The plans of every session the engine opens."""
    opened, real_open = [], engine.open_session

    def spy(model, plan, *args, **kwargs):
        opened.append(plan)
        return real_open(model, plan, *args, **kwargs)

    monkeypatch.setattr(engine, "open_session", spy)
    return opened


@pytest.mark.parametrize("model,device,options,error", [
    ("logits", "cpu", {"preprocess": "fused"}, "not on a CUDA device"),     # the kernels need the model on CUDA
    ("graph", "cpu", {"preprocess": "host"}, "preprocesses in its graph"),  # the recipe is inside the graph
    ("graph", "cpu", {"preprocess": "fused"}, "preprocesses in its graph"),
    ("logits", "cpu", {"preprocess": "gpu"}, "valid: \\['auto', 'host', 'fused'\\]"),
    ("labels", "cpu", {"flip_tta": True}, "outputs labels"),                # TTA averages scores
    ("logits", "cuda:1", {"preprocess": "fused"}, "GPU 0"),                 # Numba's device is GPU 0
])
def test_option_refusals_say_why_before_any_session_opens(models, monkeypatch, sessions_opened, model, device,
                                                          options, error):
    FakeGpu(monkeypatch)
    with pytest.raises((ProviderError, UsageError), match=error):
        Segmenter(models[model], device=device, **options)
    assert sessions_opened == []


def test_fused_kernels_that_cannot_run_here_are_refused_before_any_session(models, monkeypatch, fused_module,
                                                                          sessions_opened):
    FakeGpu(monkeypatch)
    fused_module.unavailable_reason = lambda: "no CUDA device or driver"
    with pytest.raises(ProviderError, match="preprocess='fused': no CUDA device or driver"):
        Segmenter(models["logits"], device="cuda", preprocess="fused")
    assert sessions_opened == []
    assert Segmenter(models["logits"], device="cuda").preprocessing == "host"  # auto: the host path


def test_fused_kernels_that_do_not_support_the_recipe_leave_the_host_path(models, monkeypatch, fused_module, caplog):
    FakeGpu(monkeypatch)
    monkeypatch.setattr(FakeFusedRecipe, "supports", staticmethod(lambda recipe, *sizes: "no CLAHE kernel"))
    caplog.set_level("INFO", "usseg.runtime")
    assert Segmenter(models["logits"], device="cuda").preprocessing == "host"
    assert "do not support recipe 'none'" in caplog.text
    with pytest.raises(ProviderError, match="do not support recipe"):
        Segmenter(models["logits"], device="cuda", preprocess="fused")


def test_in_graph_models_name_their_path(models, frames):
    seg = Segmenter(models["graph"], device="cpu")
    assert seg.preprocessing == "in-graph" and seg.model_info()["preprocessing"] == "in-graph"


# -- flip TTA ------------------------------------------------------------------------------------------------
def test_flip_tta_averages_the_scores_of_the_frame_and_its_mirror(models, frames):
    seg = Segmenter(models["asym"], device="cpu", flip_tta=True)
    plain = Segmenter(models["asym"], device="cpu")
    differs = False
    for frame in frames:
        result = seg(frame)
        np.testing.assert_array_equal(result.labels, reference_labels(models["asym"], frame, flip=True))
        differs |= not np.array_equal(result.labels, plain(frame).labels)
    assert differs  # the model is not mirror-symmetric, so TTA changes something
    assert seg.model_info()["flip_tta"] is True and "flip_tta=True" in repr(seg)


def test_flip_tta_in_the_multi_frame_mode_equals_frame_by_frame(models, frames):
    seg = Segmenter(models["asym-dynamic"], device="cpu", flip_tta=True, threads=2)
    for frame, result in zip(frames, seg.batch(frames)):
        np.testing.assert_array_equal(result.labels, reference_labels(models["asym"], frame, flip=True))
        np.testing.assert_array_equal(result.labels, seg(frame).labels)
    seg.close()


def test_model_errors_stay_model_errors(models, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(models["logits"].read_bytes()[:200])
    with pytest.raises(ModelError, match="cannot load this model"):
        Segmenter(bad, device="cpu")


# -- a real GPU --------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not cuda_device_present(), reason="needs a CUDA device and onnxruntime-gpu")
def test_real_cuda_graph_capture_and_results(models, frames):
    seg = Segmenter(models["logits"], device="cuda")
    info = seg.model_info()
    assert info["provider"] == CUDA and info["cuda_graph"] and info["capture_verified"]
    results = {}
    worker = threading.Thread(target=lambda: results.update(r=seg(frames[0])))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(results["r"].labels, reference_labels(models["logits"], frames[0]))
    np.testing.assert_array_equal(seg(frames[1]).labels, reference_labels(models["logits"], frames[1]))
    dynamic = Segmenter(models["dynamic"], device="cuda")
    for frame, result in zip(frames, dynamic.batch(frames)):
        np.testing.assert_array_equal(result.labels, reference_labels(models["logits"], frame))


def test_graph_check_sessions_keep_the_cpu_out_validly(monkeypatch):
    """graph_check on CUDA: the CPU provider unlisted with disable_cpu_ep_fallback (the valid pair,
    inference_session.cc); where ORT puts nodes on the CPU anyway, the row says the CPU took part."""
    from usseg.benchmarks import graph_check

    opened = []

    class Session:
        def __init__(self, plan):
            self.plan = plan

        def get_providers(self):
            return self.plan.names + ([CPU] if CPU not in self.plan.names else [])

        def get_provider_options(self):
            return {n: dict(o) for n, o in self.plan.providers}

    def fake_open(model, plan, threads=None, optimize=True):
        opened.append(plan)
        if not plan.cpu_nodes and refuse:
            raise RuntimeError("This session contains graph nodes that are assigned to the default CPU EP, but "
                               "fallback to CPU EP has been explicitly disabled by the user.")
        return Session(plan)

    monkeypatch.setattr(graph_check, "available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(graph_check, "open_session", fake_open)
    refuse = False
    _, cpu_nodes = graph_check._session(b"model", "cuda:1")
    assert not cpu_nodes and opened[-1].names == [CUDA] and opened[-1].device_id == 1
    assert ("session.disable_cpu_ep_fallback", "1") in opened[-1].session_config
    refuse = True
    _, cpu_nodes = graph_check._session(b"model", "cuda")
    assert cpu_nodes and opened[-1].names == [CUDA, CPU] and opened[-1].session_config == ()
    # --conv-algo: only the CUDA provider's algorithm search changes
    refuse = False
    segmenter_options = opened[0].options(CUDA)
    graph_check._session(b"model", "cuda:1", "EXHAUSTIVE")
    assert opened[-1].options(CUDA) == {**segmenter_options, "cudnn_conv_algo_search": "EXHAUSTIVE"}
    assert segmenter_options["cudnn_conv_algo_search"] == "HEURISTIC"
