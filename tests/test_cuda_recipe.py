"""The fused CUDA recipe (usseg.runtime.cuda) against the host preprocessing.

The kernels run in Numba's CUDA simulator, in a subprocess started with NUMBA_ENABLE_CUDASIM=1:
the simulator has to be chosen before numba.cuda is first imported, and no other test may see it.
It runs every CUDA thread as a Python thread, so the frames are small. The contract checked: the
8-bit image after the recipe is within 1 grey level of OpenCV's everywhere and equal on >= 99.9 %
of pixels; the model input is exactly the host's min-max of that image inside the letterbox and 0
in the padding.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import USGRA

from usseg.benchmarks.models import phantom_frames
from usseg.runtime.cuda import FusedRecipe, FusedRecipeError
from usseg.runtime.cuda.tables import gaussian_taps, nlm_weights
from usseg.runtime.preprocess import Letterbox, enhance, get_recipe, minmax, with_overrides

# Runs the fused recipe on frames.npz; writes the model inputs and the 8-bit images to out.npz.
RUNNER = """
import json, sys
import numpy as np
from numba import cuda
from usseg.runtime.cuda import FusedRecipe, unavailable_reason
from usseg.runtime.preprocess import get_recipe

if unavailable_reason():
    print(json.dumps({"unavailable": unavailable_reason()}))
    sys.exit(0)
args = json.loads(sys.argv[1])
frames = np.load(args["frames"])["frames"]
fused = FusedRecipe(get_recipe(args["recipe"]), frames.shape[1:], tuple(args["input_hw"]))
out = fused.input_array()
if args.get("flat_output"):
    out = out.reshape(*args["input_hw"])
stream = cuda.stream() if args.get("own_stream") else None
inputs, enhanced = [], []
for frame in frames:
    fused.run(frame, out, stream=stream)
    inputs.append(out.copy_to_host().reshape(args["input_hw"]))
    enhanced.append(fused.enhanced())
np.savez(args["out"], inputs=np.stack(inputs), enhanced=np.stack(enhanced))
print(json.dumps({"ok": True}))
"""


def run_fused(tmp_path: Path, recipe: str, frames: list[np.ndarray], input_hw, simulated=True, **options):
    """The fused recipe's model inputs [N, H, W] and 8-bit images [N, h, w] for ``frames``."""
    np.savez(tmp_path / "frames.npz", frames=np.stack(frames))
    args = {"frames": str(tmp_path / "frames.npz"), "out": str(tmp_path / "out.npz"), "recipe": recipe,
            "input_hw": list(input_hw), **options}
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulated:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args)], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if "unavailable" in report:
        pytest.skip(f"fused recipe unavailable: {report['unavailable']}")
    result = np.load(tmp_path / "out.npz")
    return result["inputs"], result["enhanced"]


def assert_matches_host(frames, recipe_name, input_hw, inputs, enhanced):
    recipe = get_recipe(recipe_name)
    box = Letterbox.fit(*frames[0].shape, *input_hw)
    for frame, got_input, got_8bit in zip(frames, inputs, enhanced):
        want_8bit = enhance(box.resize_image(frame), recipe)
        diff = np.abs(got_8bit.astype(np.int16) - want_8bit.astype(np.int16))
        assert diff.max() <= 1, f"{recipe_name}: {int((diff > 1).sum())} pixels more than 1 grey level apart"
        assert (diff == 0).mean() >= 0.999, f"{recipe_name}: only {(diff == 0).mean():.4%} of pixels equal"
        inside = (slice(box.top, box.top + box.new_h), slice(box.left, box.left + box.new_w))
        np.testing.assert_array_equal(got_input[inside], minmax(got_8bit))
        padding = np.ones(input_hw, bool)
        padding[inside] = False
        assert not got_input[padding].any()


def phantom(count, frame_hw, seed=3):
    """Phantom frames shrunk to a small size (the shrink is only how the test gets small frames)."""
    h, w = frame_hw
    return [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
            for f in phantom_frames(count, seed=seed, height=max(48, 3 * h), width=max(48, 3 * w))]


CASES = [
    # recipe, frame size, model input: what the case adds
    ("seed", (40, 52), (24, 32)),  # the seed recipe, a non-integer shrink, a padded column
    ("no-clahe", (32, 40), (16, 20)),  # the 2x shrink OpenCV rounds half up
    ("no-unsharp", (20, 26), (20, 32)),  # no shrink, padding on both sides
    ("nlm-tiny", (40, 52), (24, 32)),  # another NLM window (3 / 7)
]


@pytest.mark.parametrize("recipe,frame_hw,input_hw", CASES)
def test_fused_recipe_matches_host_preprocess(tmp_path, recipe, frame_hw, input_hw):
    frames = phantom(1, frame_hw)
    inputs, enhanced = run_fused(tmp_path, recipe, frames, input_hw)
    assert inputs.shape == (1, *input_hw) and inputs.dtype == np.float32
    assert_matches_host(frames, recipe, input_hw, inputs, enhanced)


# Runs the NLM kernel alone on each frame of frames.npz; prints the outputs' file.
NLM_RUNNER = """
import json, sys
import numpy as np
from usseg.runtime.cuda import nlm
from usseg.runtime.cuda.device import target
from usseg.runtime.cuda.tables import nlm_weights

args = json.loads(sys.argv[1])
frames = np.load(args["frames"], allow_pickle=True)["frames"]
cuda, out = target().cuda, []
for frame, (h, template, search) in zip(frames, args["windows"]):
    table, shift = nlm_weights(h, template, search)
    src = cuda.to_device(np.ascontiguousarray(frame)[None])  # one frame: [1, H, W]
    dst = cuda.device_array_like(src)
    nlm.launch(src, dst, cuda.to_device(table), template, search, shift, 0)
    out.append(dst.copy_to_host()[0])
np.savez(args["out"], *out)
"""

NLM_CASES = [
    # frame size, h, template, search: what the case adds
    ((17, 23), 5.0, 7, 21),  # the seed's window; one partial tile, every pixel within the border of 13
    ((14, 40), 5.0, 7, 21),  # two tiles side by side, the smallest frame the seed's window allows
    ((40, 35), 12.0, 3, 7),  # 2 x 2 tiles, odd sizes, another window and h
    ((35, 34), 9.0, 5, 11),  # a third window
]


def test_nlm_kernel_equals_opencv_grey_level_for_grey_level(tmp_path):
    """The kernel alone against cv2.fastNlMeansDenoising: every pixel equal, at the image borders,
    across tile edges, for several windows (each weight serves both pixels of a pair, so a wrong
    pairing or a missed offset shows up as a grey level off)."""
    rng = np.random.default_rng(5)
    frames = []
    for (h, w), *_ in NLM_CASES:  # smooth ramps plus noise: patches alike enough for many weights
        ramps = cv2.resize(rng.integers(60, 200, (3, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        frames.append(cv2.add(ramps, rng.integers(0, 8, (h, w)).astype(np.uint8)))
    np.savez(tmp_path / "frames.npz", frames=np.array(frames, dtype=object))
    args = {"frames": str(tmp_path / "frames.npz"), "out": str(tmp_path / "out.npz"),
            "windows": [[h, t, s] for _, h, t, s in NLM_CASES]}
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, "-c", NLM_RUNNER, json.dumps(args)], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for k, (frame, (_, h, template, search)) in enumerate(zip(frames, NLM_CASES)):
        want = cv2.fastNlMeansDenoising(frame, None, h=h, templateWindowSize=template, searchWindowSize=search)
        assert (want != frame).mean() > 0.5  # the case changes most pixels
        np.testing.assert_array_equal(got[f"arr_{k}"], want, err_msg=f"{frame.shape}, h {h}, {template}/{search}")


def test_fused_recipe_on_real_frames_reuses_its_buffers(tmp_path):
    """Two usgra-seg frames in a row through the recipe without NLM, 3x shrink, a stream of the
    caller's and a [H, W] output: the second frame's result is its own."""
    files = sorted((USGRA / "images").glob("*.png"))[::2]
    assert len(files) == 2
    frames = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (96, 72), interpolation=cv2.INTER_AREA)
              for p in files]
    inputs, enhanced = run_fused(tmp_path, "realtime", frames, (24, 32), own_stream=True, flat_output=True)
    assert not np.array_equal(inputs[0], inputs[1])
    assert_matches_host(frames, "realtime", (24, 32), inputs, enhanced)


def test_flat_frame_gives_zeros(tmp_path):
    frames = [np.full((30, 40), 77, np.uint8)]
    inputs, enhanced = run_fused(tmp_path, "none", frames, (24, 32))
    assert (enhanced == 77).all() and not inputs.any()


# Runs the fused recipe on the frames of frames.npz in one run_batch, then one by one, counting
# the simulator's kernel launches (each ``kernel[grid, block, stream]``) of each call.
BATCH_RUNNER = """
import json, sys
import numpy as np
from numba.cuda.simulator.kernel import FakeCUDAKernel
from usseg.runtime.cuda import FusedRecipe
from usseg.runtime.preprocess import get_recipe

args = json.loads(sys.argv[1])
frames = np.load(args["frames"])["frames"]
fused = FusedRecipe(get_recipe(args["recipe"]), frames.shape[1:], tuple(args["input_hw"]))
launches, configure = [], FakeCUDAKernel.__getitem__

def counted(kernel, configuration):
    configured = configure(kernel, configuration)
    launches.append([kernel.fn.__name__, [int(n) for n in configured.grid_dim]])
    return configured

FakeCUDAKernel.__getitem__ = counted
out = fused.input_array(len(frames))
boxes = fused.run_batch(frames if args["as_array"] else list(frames), out)
report = {"batch": launches[:], "one": [], "boxes": [[b.top, b.left, b.new_h, b.new_w] for b in boxes]}
inputs, enhanced = out.copy_to_host()[:, 0], np.stack([fused.enhanced(i) for i in range(len(frames))])
one, one_inputs, one_enhanced = fused.input_array(), [], []
for frame in frames:
    launches.clear()
    fused.run(frame, one)
    report["one"].append(launches[:])
    one_inputs.append(one.copy_to_host()[0, 0])
    one_enhanced.append(fused.enhanced())
np.savez(args["out"], inputs=inputs, enhanced=enhanced, one_inputs=np.stack(one_inputs),
         one_enhanced=np.stack(one_enhanced))
print(json.dumps(report))
"""

BATCH_CASES = [
    # recipe, frame size, model input, frames, the kernels of one call in order: what the case adds
    ("nlm-tiny", (30, 40), (16, 16), 2,
     ["area_taps", "nlm", "clahe_lut", "clahe_apply", "unsharp", "reduce_range", "write_input"]),  # every step
    ("realtime", (24, 32), (16, 16), 3,
     ["area_block", "clahe_lut", "clahe_apply", "unsharp", "reduce_range", "write_input"]),  # 2x shrink, 3 frames
    ("none", (16, 20), (16, 24), 3, ["reduce_range", "write_input"]),  # no shrink: the frames are the content
]


@pytest.mark.parametrize("recipe,frame_hw,input_hw,count,kernels", BATCH_CASES)
def test_one_launch_per_kernel_for_n_frames_equals_the_frames_one_by_one(tmp_path, recipe, frame_hw, input_hw,
                                                                          count, kernels):
    """run_batch launches each kernel once for all N frames (its grid N times one frame's), and
    writes each frame's model input and 8-bit image exactly as run does for that frame alone."""
    frames = phantom(count, frame_hw, seed=7)
    np.savez(tmp_path / "frames.npz", frames=np.stack(frames))
    args = {"frames": str(tmp_path / "frames.npz"), "out": str(tmp_path / "out.npz"), "recipe": recipe,
            "input_hw": list(input_hw), "as_array": count == 3}
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, "-c", BATCH_RUNNER, json.dumps(args)], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    got = np.load(tmp_path / "out.npz")
    assert [name for name, _ in report["batch"]] == kernels
    for single in report["one"]:
        assert [name for name, _ in single] == kernels
        for (_, batch_grid), (_, one_grid) in zip(report["batch"], single):
            assert np.prod(batch_grid) == count * np.prod(one_grid) and count in batch_grid
    box = Letterbox.fit(*frame_hw, *input_hw)
    assert report["boxes"] == [[box.top, box.left, box.new_h, box.new_w]] * count
    np.testing.assert_array_equal(got["inputs"], got["one_inputs"])
    np.testing.assert_array_equal(got["enhanced"], got["one_enhanced"])
    assert len({got["inputs"][i].tobytes() for i in range(count)}) == count  # each frame its own input
    assert_matches_host(frames, recipe, input_hw, got["inputs"], got["enhanced"])


API_ERRORS = """
import json
import numpy as np
from numba import cuda
from usseg.runtime.cuda import FusedRecipe, FusedRecipeError, compute_stream, device_array_from_pointer
from usseg.runtime.preprocess import FrameError, get_recipe

fused = FusedRecipe(get_recipe("none"), (30, 40), (24, 32))
frame, errors = np.zeros((30, 40), np.uint8), []
for out in (cuda.device_array((1, 1, 24, 32), np.float64), cuda.device_array((1, 1, 24, 31), np.float32),
            np.zeros((1, 1, 24, 32), np.float32)):
    try:
        fused.run(frame, out)
    except FusedRecipeError as exc:
        errors.append(str(exc))
for bad in (np.zeros((31, 40), np.uint8), np.zeros((30, 40), np.float32)):
    try:
        fused.run(bad, fused.input_array())
    except FrameError as exc:
        errors.append(str(exc))
for frames, out in (([frame, frame], fused.input_array()), ([], fused.input_array()),
                    ([frame, np.zeros((30, 41), np.uint8)], fused.input_array(2))):
    try:
        fused.run_batch(frames, out)
    except (FusedRecipeError, FrameError) as exc:
        errors.append(str(exc))
for pointer, shape in ((0, (1, 1, 24, 32)), (4096, (1, 0, 24, 32)), (4096, (1, 1, 24, 32))):
    try:
        device_array_from_pointer(pointer, shape)
    except FusedRecipeError as exc:
        errors.append(str(exc))
errors.append(f"stream to share: {compute_stream()}")
print(json.dumps(errors))
"""


def test_wrong_buffers_frames_and_pointers_are_refused_with_a_reason():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run([sys.executable, "-c", API_ERRORS], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(errors) == 12, errors
    assert errors[0].startswith("output float64 [1, 1, 24, 32]: expected float32 [1, 1, 24, 32]")
    assert errors[1].startswith("output float32 [1, 1, 24, 31]")
    assert "__cuda_array_interface__" in errors[2]  # a host array is not the device buffer
    assert "takes uint8 grey frames of 30x40" in errors[3] and "float32" in errors[4]
    assert errors[5].startswith("output float32 [1, 1, 24, 32]: expected float32 [2, 1, 24, 32]")  # 2 frames
    assert errors[6] == "no frames: run_batch takes one or more"
    assert errors[7].startswith("frame 1 of 2 uint8 (30, 41):")  # the batch names the frame
    assert errors[8].startswith("device pointer 0") and errors[9].startswith("shape (1, 0, 24, 32)")
    assert "needs a CUDA device" in errors[10]  # the simulator has no device memory to point at
    assert errors[11] == "stream to share: None"  # nor a stream ONNX Runtime could compute on


# -- what the kernels refuse, before any CUDA is touched ----------------------------------------
REFUSED = [
    # recipe, frame size, model input, words the reason must contain
    (get_recipe("bilateral"), None, None, "'denoise': 'bilateral'"),
    (get_recipe("median"), None, None, "'denoise': 'median'"),
    (with_overrides(get_recipe("seed"), clahe_tile=40), None, None, "'clahe_tile'"),
    (with_overrides(get_recipe("seed"), nlm_h=60.0), None, None, "'nlm_h'"),
    (get_recipe("seed"), (24, 32), (48, 64), "only shrink"),  # OpenCV enlarges bilinearly
    (get_recipe("seed"), (40, 60), (12, 18), "non-local means needs more than 13 px"),
    (get_recipe("seed"), (480, 640, 3), (240, 320), "expected (height, width)"),  # a colour frame's shape
]


@pytest.mark.parametrize("recipe,frame_hw,input_hw,words", REFUSED)
def test_unsupported_recipes_and_sizes_are_refused_with_a_reason(recipe, frame_hw, input_hw, words):
    reason = FusedRecipe.supports(recipe, frame_hw, input_hw)
    assert reason is not None and words in reason
    with pytest.raises(FusedRecipeError, match="recipe|content|frame"):
        FusedRecipe(recipe, frame_hw or (48, 64), input_hw or (24, 32))


@pytest.mark.parametrize("name", ["seed", "realtime", "no-clahe", "no-unsharp", "nlm-tiny", "nlm-small", "none"])
def test_seed_recipe_and_its_variants_are_supported(name):
    assert FusedRecipe.supports(get_recipe(name), (480, 640), (240, 320)) is None


# -- host tables --------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_gaussian_taps_reproduce_opencv_blur(sigma):
    img = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    taps = gaussian_taps(sigma).astype(np.int64)
    r = len(taps) // 2
    pad = cv2.copyMakeBorder(img, r, r, r, r, cv2.BORDER_REFLECT_101).astype(np.int64)
    across = sum(k * pad[:, j:j + img.shape[1]] for j, k in enumerate(taps))
    down = sum(k * across[i:i + img.shape[0]] for i, k in enumerate(taps))
    np.testing.assert_array_equal((down + 32768) >> 16, cv2.GaussianBlur(img, (0, 0), sigma))


def test_nlm_weights_are_opencvs_fixed_point_table():
    table, shift = nlm_weights(5.0, 7, 21)
    assert shift == 6 and table[0] == (2 ** 31 - 1) // (21 * 21 * 255)  # weight 1 in OpenCV's units
    assert np.all(np.diff(table) <= 0) and table[-1] >= 0.001 * table[0]


# -- import hygiene and the compiled code -------------------------------------------------------
BLOCKED_IMPORT = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] == ["numba", "cuda"] or name.split(".")[0] == "numba_cuda":
            raise ImportError(f"no module named {name!r}")
sys.meta_path.insert(0, Block())
import usseg.runtime.cuda as fused
for m in pkgutil.walk_packages(fused.__path__, "usseg.runtime.cuda."):
    importlib.import_module(m.name)
from usseg.runtime.preprocess import get_recipe
print(fused.unavailable_reason())
try:
    fused.FusedRecipe(get_recipe("seed"), (48, 64), (24, 32))
except fused.CudaUnavailableError as exc:
    print("refused:", exc)
"""


def test_imports_without_numba_cuda_and_says_why_it_cannot_run():
    out = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    reason, refused = out.stdout.strip().splitlines()[-2:]
    assert "numba-cuda" in reason and refused.startswith("refused: Numba's CUDA target is not installed")


def test_runtime_never_imports_numba_cuda_eagerly():
    code = ("import sys, importlib, pkgutil, usseg.runtime, usseg.runtime.segmenter, usseg.runtime.cuda as c\n"
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(c.__path__, 'usseg.runtime.cuda.')]\n"
            "print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# Compiles every kernel for sm_90 without a device and reports its float64 and local-memory use.
PTX = """
import json, re, types
import numba.cuda.dispatcher as dispatcher
from numba import cuda
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from usseg.runtime.cuda import clahe, minmax, nlm, resize, unsharp
u8, i32, f32 = "uint8[:, :, ::1]", "int32[:, ::1]", "float32[:, ::1]"  # frames [N, h, w]; tables 2-D
kernels = {
    "area_block": (resize.kernels().area_block, f"void({u8}, {u8}, int64, int64, boolean, float32)"),
    "area_taps": (resize.kernels().area_taps, f"void({u8}, {u8}, {i32}, {f32}, {i32}, {f32})"),
    "nlm": (nlm.nlm_kernel(7, 21, 132, 6), f"void({u8}, {u8}, int32[::1])"),
    "clahe_lut": (clahe.lut_kernel(8, 60, 80, 37, 0.053125), f"void({u8}, {u8})"),
    "clahe_apply": (clahe.kernels().clahe_apply, f"void({u8}, {u8}, {u8}, int64, {i32}, {f32}, {i32}, {f32})"),
    "unsharp": (unsharp.unsharp_kernel(19, 1.5, -0.5), f"void({u8}, {u8}, int32[::1])"),
    "reduce_range": (minmax.kernels().reduce_range, "void(uint8[:, ::1], int32[:, ::1])"),
    "write_input": (minmax.kernels().write_input, "void(uint8[:, :, ::1], int32[:, ::1], float32[::1], "
                                                  "float32[:, :, ::1], int64, int64)"),
}
report = {}
for name, (kernel, sig) in kernels.items():
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    report[name] = {"f64": len(re.findall(r"\\.f64\\b", ptx)), "local": len(re.findall(r"\\b[ls][dt]\\.local", ptx))}
print(json.dumps(report))
"""


def test_kernels_compile_for_the_device_with_no_float64():
    """Needs NVVM (pip install nvidia-nvvm nvidia-cuda-nvrtc), no GPU."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", PTX], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        if any(word in out.stderr for word in ("libnvvm", "nvrtc", "NVVM", "DynamicLibNotFound")):
            pytest.skip("NVVM / NVRTC not installed: cannot compile for the device here")
        raise AssertionError(out.stderr[-3000:])
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 8
    assert {name: r["f64"] for name, r in report.items() if r["f64"]} == {}
    assert report["nlm"]["local"] == 0  # the per-thread rows and ring stay in registers


# -- on a GPU -----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("input_hw", [(480, 640), (240, 320)])
def test_fused_seed_recipe_on_full_frames_on_the_device(tmp_path, input_hw):
    if not Path("/dev/nvidiactl").exists():
        pytest.skip("no NVIDIA device on this machine")
    frames = phantom_frames(4, seed=11, height=480, width=640)
    files = sorted((USGRA / "images").glob("*.png"))
    frames += [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (640, 480), interpolation=cv2.INTER_AREA)
               for p in files]
    inputs, enhanced = run_fused(tmp_path, "seed", frames, input_hw, simulated=False)
    assert_matches_host(frames, "seed", input_hw, inputs, enhanced)


# NumPy 2.5 dropped np.row_stack, which numba-cuda (0.30.4 and earlier) registers an overload for
# on its first compile; deleting it here gives this NumPy the same gap.
WITHOUT_ROW_STACK = """
import sys
import numpy as np
if hasattr(np, "row_stack"):
    del np.row_stack
if sys.argv[1] == "target":
    from usseg.runtime.cuda.device import target
    target()
try:
    import numba.cuda.np.arrayobj
except AttributeError as exc:
    print("failed:", exc)
else:
    print("compiles:", np.row_stack is np.vstack)
"""


@pytest.mark.parametrize("through_target", [False, True])
def test_numba_cuda_compiles_on_a_numpy_without_row_stack(through_target):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", WITHOUT_ROW_STACK, "target" if through_target else "bare"],
                         capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    if through_target:
        assert last == "compiles: True"
    elif not last.startswith("failed:"):
        pytest.skip(f"this numba-cuda and NumPy need no alias ({last})")
    else:
        assert last == "failed: module 'numpy' has no attribute 'row_stack'"


def test_a_cuda_target_that_imports_but_cannot_compile_is_unavailable(monkeypatch):
    """Import and is_available() can succeed where the first compile fails; callers choosing a
    preprocessing path must hear that from unavailable_reason, not from a kernel launch."""
    import types

    from usseg.runtime.cuda import device, fused

    def broken_jit(fn):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    cuda = types.SimpleNamespace(is_available=lambda: True, jit=broken_jit)
    monkeypatch.setattr(device, "target", lambda: types.SimpleNamespace(cuda=cuda, simulated=False))
    fused._compile_reason.cache_clear()
    try:
        reason = fused.unavailable_reason()
    finally:
        fused._compile_reason.cache_clear()
    assert reason == ("numba.cuda cannot compile and run a kernel here: AttributeError: "
                      "module 'numpy' has no attribute 'row_stack'")
