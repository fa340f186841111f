"""The sections of the GPU check (usseg.benchmarks.gpu_check); each runs in a process of its own.

Every section takes the run's :class:`Setup` and returns a JSON-ready dict; what one section
makes for the next (the phantom data set, the checkpoints, the exported models) lies in the work
folder. A section that cannot run here returns ``{"skipped": reason}``.
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .figures import POSTPROCESS_TARGET_MS

FRAMES_SEED = 424242  # the timed and compared frames: a seed no training set uses
# issue 30's targets (H100/H200 class, seed network 480x640, fp16): host to host at batch 1, the
# multi-frame mode, against the seed-style pipeline of the same run, agreement with the host
# path, and the two stages measured alone
TARGET_MS, TARGET_P99_MS, TARGET_FPS, TARGET_RATIO = 2.0, 3.0, 2500.0, 100.0
TARGET_AGREEMENT, TARGET_POST_MS, TARGET_NLM_MS = 0.9999, POSTPROCESS_TARGET_MS, 0.3


@dataclass(frozen=True)
class Setup:
    work: Path
    device: str = "cuda"
    dry: bool = False
    quick: bool = False

    @property
    def frame_hw(self) -> tuple[int, int]:
        return (64, 80) if self.dry else (480, 640)

    @property
    def count(self) -> int:
        return 12 if self.dry else 16 if self.quick else 32

    @property
    def demo(self) -> tuple[str, int]:      # profile, epochs
        return ("tiny", 1) if self.dry else ("demo", 2)

    @property
    def network(self) -> tuple[str, int]:   # model configuration, epochs
        # Enough epochs for label maps like a trained network's (4 gave val Dice 0.005 on an H200,
        # 1.4 s an epoch): the post-processing time depends on them.
        return ("tiny", 1) if self.dry else ("seed", 10 if self.quick else 30)

    @property
    def precision(self) -> str:
        return "fp32" if self.dry else "fp16"

    @property
    def rounds(self) -> tuple[int, int, int, int]:  # fast, slow (host NLM), batch size, batch rounds
        return (3, 1, 2, 1) if self.dry else (50, 5, 16, 2) if self.quick else (100, 10, 32, 3)

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)


def _train_device(s: Setup) -> str:
    return "cpu" if s.device == "cpu" else "cuda"


# -- machine ----------------------------------------------------------------------------------------
def machine(s: Setup) -> dict[str, Any]:
    import onnxruntime as ort

    from usseg.runtime.providers import conflicting_ort_packages, preload_gpu_libraries

    from .machine import cpu_model

    if s.device != "cpu":
        preload_gpu_libraries()
    from usseg.runtime.provenance import package_version, usable_cores

    info: dict[str, Any] = {"cpu": cpu_model(), "cores": usable_cores(), "python": platform.python_version(),
                            "numpy": np.__version__, "numba_cuda": package_version("numba-cuda"),
                            "onnxruntime": ort.__version__, "onnxruntime_packages": conflicting_ort_packages(),
                            "providers": ort.get_available_providers(), "gpu": None, "driver": None}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        if smi.returncode == 0 and smi.stdout.strip():
            name, driver, memory = (v.strip() for v in smi.stdout.strip().splitlines()[0].split(","))
            info.update(gpu=name, driver=driver, gpu_memory=memory)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        info["nvidia_smi"] = str(exc)
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda, torch_sees_cuda=torch.cuda.is_available())
        if torch.cuda.is_available():
            info["torch_gpu"] = torch.cuda.get_device_name(0)
    except ImportError as exc:
        info["torch"] = f"not importable: {exc}"
    try:
        from usseg.runtime.cuda import unavailable_reason

        info["fused_kernels"] = unavailable_reason() or "available"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this section describes the machine
        info["fused_kernels"] = f"usseg.runtime.cuda cannot be imported: {exc}"
    return info


# -- data, training, export ------------------------------------------------------------------------
def data(s: Setup) -> dict[str, Any]:
    from usseg.train.phantom import PhantomConfig, write_dataset
    from usseg.train.prepare import main as prepare_main

    h, w = s.frame_hw
    write_dataset(s.path("seed"), count=s.count, seed=7, cfg=PhantomConfig(height=h, width=w))
    rc = prepare_main(["--annotations", str(s.path("seed", "annotations.json")), "--images",
                       str(s.path("seed", "images")), "--out", str(s.path("data")), "--overwrite"])
    if rc != 0:
        raise RuntimeError(f"usseg prepare exited with {rc}")
    return {"frames": s.count, "frame": [h, w]}


def _train(s: Setup, cfg, out: str) -> dict[str, Any]:
    import torch

    from usseg.train.loop import train

    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    summary = train(cfg, s.path("data"), s.path(out), overwrite=True, progress=False)
    seconds = time.perf_counter() - t
    result = {"model": cfg.model, "recipe": cfg.recipe, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
              "amp": cfg.amp, "num_workers": cfg.num_workers, "device": cfg.device, "seconds": round(seconds, 1),
              "summary": json.loads(json.dumps(summary, default=str))}
    if cfg.device == "cuda":
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def train_demo(s: Setup) -> dict[str, Any]:
    """The demo profile (tiny in a dry run) for a few epochs, AMP and loader workers as configured."""
    from usseg.train.config import get_profile

    profile, epochs = s.demo
    cfg = replace(get_profile(profile), epochs=epochs, val_every=epochs, device=_train_device(s))
    return {"profile": profile, **_train(s, cfg, "demo")}


def export_demo(s: Setup) -> dict[str, Any]:
    """The demo checkpoint exported (fp32, verified against PyTorch), then run here and on the CPU."""
    from usseg.export.cli import main as export_main
    from usseg.runtime.segmenter import Segmenter
    from usseg.train.phantom import phantom_frames

    out = s.path("models", "demo.onnx")
    t = time.perf_counter()
    verify = [] if s.dry else ["--frames", str(s.path("data"))]  # the dry run saves the verification's minutes
    rc = export_main([str(s.path("demo", "best.pt")), "-o", str(out)] + (verify or ["--no-verify"]))
    if rc != 0:
        raise RuntimeError(f"usseg export exited with {rc}")
    seconds = time.perf_counter() - t
    frames = phantom_frames(4, FRAMES_SEED, *s.frame_hw)
    here, cpu = Segmenter(out, device=s.device), Segmenter(out, device="cpu")
    agree = [float((here(f).labels == cpu(f).labels).mean()) for f in frames]
    return {"seconds": round(seconds, 1), "verified": not s.dry, "bytes": out.stat().st_size, "provider": here.provider,
            "labels_equal_to_cpu_min": min(agree)}


MODEL_VARIANTS = {  # name: (batch, in-graph preprocessing)
    "host-b1": ("1", False), "host-batch": ("dynamic", False), "graph-b1": ("1", True), "graph-batch": ("dynamic", True),
}
DRY_VARIANTS = {"host-b1": "host-batch", "graph-b1": "graph-batch"}  # a dry run times batch 1 on the dynamic ones


def model_file(s: Setup, variant: str) -> Path:
    return s.path("models", f"{DRY_VARIANTS.get(variant, variant) if s.dry else variant}.onnx")


def models(s: Setup) -> dict[str, Any]:
    """The timed network (the seed's configuration; tiny in a dry run), trained briefly so that its
    label maps look like a trained network's, exported in the four shapes the end-to-end rows use,
    each with labels as output as README advises for GPUs: the argmax runs on the device and one
    byte per pixel comes back instead of four floats per class."""
    from usseg.export.cli import main as export_main
    from usseg.train.config import get_profile

    name, epochs = s.network
    cfg = replace(get_profile("seed"), model=name, recipe="seed", epochs=epochs, val_every=epochs, offline_copies=0,
                  device=_train_device(s))
    trained = _train(s, cfg, "network")
    exported = {}
    for variant, (batch, graph) in MODEL_VARIANTS.items():
        if s.dry and variant in DRY_VARIANTS:
            continue
        args = [str(s.path("network", "best.pt")), "-o", str(s.path("models", f"{variant}.onnx")), "--no-verify",
                "--batch", batch, "--output", "labels"]
        if graph:
            args += ["--graph-preprocess", "{}x{}".format(*s.frame_hw)]
        if s.precision == "fp16":
            args.append("--fp16")
        t = time.perf_counter()
        if export_main(args) != 0:
            raise RuntimeError(f"usseg export of {variant} failed")
        exported[variant] = round(time.perf_counter() - t, 1)
    return {"network": name, "precision": s.precision, "training": trained, "export_seconds": exported}


# -- providers and capture -------------------------------------------------------------------------
def providers(s: Setup) -> dict[str, Any]:
    """Each device request opened for real: what runs, with which graph and buffers, and why."""
    import onnxruntime as ort

    from usseg.runtime.errors import UssegError
    from usseg.runtime.providers import TRT
    from usseg.runtime.segmenter import Segmenter
    from usseg.train.phantom import phantom_frames

    frames = phantom_frames(3, FRAMES_SEED, *s.frame_hw)
    rows = {}
    for device in ("cuda", "auto", "tensorrt"):
        if s.device == "cpu" and device != "auto":
            rows[device] = {"skipped": "a dry run on the CPU"}
            continue
        if device == "tensorrt" and TRT not in ort.get_available_providers():
            rows[device] = {"skipped": "this ONNX Runtime build has no TensorRT provider"}
            continue
        t = time.perf_counter()
        try:
            seg = Segmenter(model_file(s, "host-b1"), device=device, preprocess="host")
        except UssegError as exc:
            rows[device] = {"error": str(exc), "open_seconds": round(time.perf_counter() - t, 1)}
            continue
        info = {k: v for k, v in seg.model_info().items() if k not in ("recipe", "classes", "model")}
        info["open_seconds"] = round(time.perf_counter() - t, 1)
        here = [seg(f).labels for f in frames]
        other = _labels_on_another_thread(seg, frames)
        info["same_labels_from_another_thread"] = all(np.array_equal(a, b) for a, b in zip(here, other))
        rows[device] = info
        del seg
        gc.collect()
    return {"available": ort.get_available_providers(), "devices": rows}


def _labels_on_another_thread(seg, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Labels of ``frames`` segmented from a new thread, as a stream's worker would call."""
    out: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: out.extend(seg(f).labels for f in frames))
    worker.start()
    worker.join()
    return out


# -- fused kernels against OpenCV --------------------------------------------------------------------
def fused(s: Setup) -> dict[str, Any]:
    from usseg.runtime.cuda import unavailable_reason

    reason = unavailable_reason()
    if reason or s.device == "cpu":
        return {"skipped": reason or "a dry run on the CPU"}
    from usseg.runtime.cuda import FusedRecipe
    from usseg.runtime.preprocess import enhance, get_recipe, preprocess
    from usseg.train.phantom import phantom_frames

    fh, fw = s.frame_hw
    frames = phantom_frames(6, FRAMES_SEED, fh, fw)
    rows = []
    for recipe_name in ("seed", "realtime"):
        recipe = get_recipe(recipe_name)
        for ih, iw in ((fh, fw), (fh // 2, fw // 2)):
            kernels = FusedRecipe(recipe, (fh, fw), (ih, iw))
            out = kernels.input_array()
            within, exact, delta, times = [], [], 0.0, []
            for frame in frames:
                t = time.perf_counter()
                box = kernels.run(frame, out)
                times.append(time.perf_counter() - t)
                diff = np.abs(kernels.enhanced().astype(np.int16)
                              - enhance(box.resize_image(frame), recipe).astype(np.int16))
                within.append(float((diff <= 1).mean()))
                exact.append(float((diff == 0).mean()))
                host = preprocess(frame, recipe, ih, iw)[0]
                delta = max(delta, float(np.abs(out.copy_to_host()[0, 0] - host).max()))
            rows.append({"recipe": recipe_name, "frame": [fh, fw], "input": [ih, iw], "min_within_1": min(within),
                         "min_exact": min(exact), "max_input_delta": delta,
                         "median_ms": 1e3 * statistics.median(times[1:])})
    return {"rows": rows, "nlm": _nlm_alone(get_recipe("seed"), frames[0], 5 if s.quick else 20)}


def _nlm_alone(recipe, frame: np.ndarray, rounds: int) -> dict[str, Any]:
    """The seed recipe's non-local means kernel alone on one frame, timed by CUDA events (device
    time, no copies, no launch queue), and its output against OpenCV's."""
    import cv2

    from usseg.runtime.cuda import nlm

    times, out = nlm.device_times(frame, recipe.nlm_h, recipe.nlm_template, recipe.nlm_search, rounds)
    want = cv2.fastNlMeansDenoising(frame, None, h=recipe.nlm_h, templateWindowSize=recipe.nlm_template,
                                    searchWindowSize=recipe.nlm_search)
    return {"frame": list(frame.shape), "rounds": rounds, "median_ms": statistics.median(times),
            "p99_ms": float(np.percentile(times, 99)), "equal_to_opencv": float((out == want).mean())}


# -- post-processing alone --------------------------------------------------------------------------
def postprocess(s: Setup) -> dict[str, Any]:
    """The spine post-processing alone on the timed network's own label maps, one core and one
    OpenCV thread, as issue 30's 0.3 ms target reads (its time depends on the label maps)."""
    import os

    import cv2

    from usseg.runtime.postprocess import LABEL_EPI, LABEL_MID, LABEL_VTB, postprocess_spine, warmup
    from usseg.runtime.segmenter import Segmenter
    from usseg.train.phantom import phantom_frames

    seg = Segmenter(model_file(s, "host-b1"), device=s.device, preprocess="host")
    spec = seg.contract.postprocess
    maps = [seg(f).labels for f in phantom_frames(8, FRAMES_SEED, *s.frame_hw)]
    seg.close()
    cpus, threads = os.sched_getaffinity(0), cv2.getNumThreads()
    os.sched_setaffinity(0, {min(cpus)})
    cv2.setNumThreads(1)
    try:
        warmup()
        found = [postprocess_spine(m, spec) for m in maps]
        times = []
        for _ in range(5 if s.dry else 25):
            for m in maps:
                t = time.perf_counter()
                postprocess_spine(m, spec)
                times.append(1e3 * (time.perf_counter() - t))
    finally:
        cv2.setNumThreads(threads)
        os.sched_setaffinity(0, cpus)
    pixels = sum(m.size for m in maps)
    shares = {name: sum(int((m == value).sum()) for m in maps) / pixels
              for name, value in (("MID", LABEL_MID), ("VTB", LABEL_VTB), ("EPI", LABEL_EPI))}
    return {"frames": len(maps), "size": list(maps[0].shape), "calls": len(times), "median_ms": statistics.median(times),
            "p99_ms": float(np.percentile(times, 99)), "class_shares": shares,
            "frames_with_mid_line": sum(g.mid is not None for g in found)}


# -- end to end ----------------------------------------------------------------------------------------
def _time(fn, items: list, rounds: int, warm: int = 2, stages: dict[str, list[float]] | None = None) -> list[float]:
    """Wall times in ms of ``rounds`` calls; with ``stages``, each call's per-frame stage times
    (``Result.timings``: preprocess, inference, postprocess) are appended there too."""
    for i in range(warm):
        fn(items[i % len(items)])
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        out = fn(items[i % len(items)])
        times.append(1e3 * (time.perf_counter() - t))
        if stages is not None:
            first = out[0] if isinstance(out, list) else out
            for key, value in first.timings.items():
                stages.setdefault(key, []).append(value)
    return times


def _row(name: str, batch: int, times: list[float], **extra: Any) -> dict[str, Any]:
    median = statistics.median(times)
    p99 = float(np.percentile(times, 99))
    return {"pipeline": name, "batch": batch, "median_ms": median, "p99_ms": p99,
            "frames_per_s": 1e3 * batch / median, "rounds": len(times), **extra}


# The in-graph NLM gathers every search offset of every pixel at once: about 1.1 GB per 480x640
# frame, so 32 frames ask ONNX Runtime for one 35 GB buffer; 8 fit beside everything else.
GRAPH_BATCH = 8


def e2e(s: Setup) -> dict[str, Any]:
    """uint8 frame in host memory -> labels and geometry on the host, at batch 1 and in the
    multi-frame mode: host preprocessing, in-graph, fused, and the seed-style pipeline."""
    from usseg.runtime.segmenter import Segmenter
    from usseg.train.phantom import phantom_frames

    fast, slow, batch, batch_rounds = s.rounds
    frames = phantom_frames(max(batch, 8), FRAMES_SEED, *s.frame_hw)
    rows, reference, reference_geometry = [], {}, {}
    specs = [  # name, model, preprocess, batch, rounds
        ("host preprocessing + ORT", "host-b1", "host", 1, slow),
        ("in-graph preprocessing", "graph-b1", "auto", 1, fast),
        ("fused preprocessing", "host-b1", "fused", 1, fast),
        ("host preprocessing + ORT", "host-batch", "host", batch, 1),  # seconds per call: the CPU's NLM
        ("in-graph preprocessing", "graph-batch", "auto", min(batch, GRAPH_BATCH), batch_rounds),
        ("fused preprocessing", "host-batch", "fused", batch, batch_rounds),
    ]
    for name, model, prep, n, rounds in specs:
        try:
            seg = Segmenter(model_file(s, model), device=s.device, preprocess=prep)
        except Exception as exc:  # noqa: BLE001 - one row's failure is that row's result
            rows.append({"pipeline": name, "batch": n, "skipped": str(exc).splitlines()[0][:300]})
            continue
        try:
            # batched rows compare what the multi-frame mode gives: cuDNN may choose its
            # algorithms per shape
            results = [seg(f) for f in frames[:4]] if n == 1 else seg.batch(frames[:n])[:4]
            labels, geometry = [r.labels for r in results], [_geometry(r) for r in results]
            if prep == "host" and n == 1:
                reference, reference_geometry = dict(enumerate(labels)), dict(enumerate(geometry))
            agree = min(float((a == reference[i]).mean()) for i, a in enumerate(labels)) if reference else None
            same_geometry = (all(_same_geometry(g, reference_geometry[i]) for i, g in enumerate(geometry))
                             if reference_geometry else None)
            stages: dict[str, list[float]] = {}
            if n == 1:
                times = _time(seg, frames, rounds, stages=stages)
            else:
                groups = [frames[:n]] * 2
                times = _time(seg.batch, groups, rounds, warm=1, stages=stages)
            info = seg.model_info()
            rows.append(_row(name, n, times, preprocessing=info["preprocessing"], provider=info["provider"],
                             cuda_graph=info["cuda_graph"], precision=info["precision"],
                             labels_equal_to_host_min=agree, geometry_equal_to_host=same_geometry,
                             stages_ms_per_frame={k: statistics.median(v) for k, v in stages.items() if k != "total"}))
        except Exception as exc:  # noqa: BLE001 - out of memory on a big batch, say: that row only
            rows.append({"pipeline": name, "batch": n, "error": str(exc).splitlines()[0][:300]})
        seg.close()
        del seg
        gc.collect()
    rows.append(_seed_style(s, frames, slow))
    seed_ms = rows[-1].get("median_ms")
    for row in rows:
        if "median_ms" not in row:
            continue
        row["vs_seed_style"] = seed_ms / (row["median_ms"] / row["batch"]) if seed_ms else None
        if row["pipeline"].startswith("seed-style"):
            continue
        row["targets"] = ({f"median_ms<={TARGET_MS:g}": row["median_ms"] <= TARGET_MS,
                           f"p99_ms<={TARGET_P99_MS:g}": row["p99_ms"] <= TARGET_P99_MS,
                           f"x{TARGET_RATIO:g}_seed_style": bool(seed_ms) and row["vs_seed_style"] >= TARGET_RATIO}
                          if row["batch"] == 1 else {f"frames_per_s>={TARGET_FPS:g}": row["frames_per_s"] >= TARGET_FPS})
    return {"frame": list(s.frame_hw), "rows": rows}


def network(s: Setup) -> dict[str, Any]:
    """The timed network alone on the CUDA provider: settings, replay against host to host, and
    where each node runs (benchmarks/gpu_network.py)."""
    from usseg.train.phantom import phantom_frames

    from . import gpu_network

    if s.device == "cpu":
        return {"skipped": "needs ONNX Runtime's CUDA provider (a dry run on the CPU)"}
    return gpu_network.run(model_file(s, "host-b1"), phantom_frames(1, FRAMES_SEED, *s.frame_hw)[0], s.rounds[0])


def _geometry(result) -> dict[str, Any]:
    """A Result's lines and box, the geometry the rows must agree on."""
    return {**result.lines, "VTB": result.box}


def _same_geometry(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and np.array_equal(a[k], b[k]))
        for k in a)


def _seed_style(s: Setup, frames: list[np.ndarray], rounds: int) -> dict[str, Any]:
    """The seed-style pipeline (cv2 recipe, torch eager fp32, reference post-processing) on the same
    device, with the same network and weights as the usseg rows."""
    name = "seed-style (cv2 + torch eager fp32)"
    try:
        import torch

        from usseg.train.checkpoint import load_checkpoint, model_from_checkpoint

        from .seed_style import SeedStylePipeline

        device = "cuda" if s.device != "cpu" and torch.cuda.is_available() else "cpu"
        state = load_checkpoint(s.path("network", "best.pt"))
        network = model_from_checkpoint(state, "network/best.pt")
        size = state["contract"]["input"]
        try:  # the seed's pad/crop to the network's own input size, where this version can
            pipe = SeedStylePipeline(network, device=device, height=size["height"], width=size["width"])
        except TypeError:
            pipe = SeedStylePipeline(network, device=device)
        times = _time(pipe, frames, rounds)
        return _row(name, 1, times, provider=f"torch {device}", preprocessing="host (cv2)", precision="fp32")
    except Exception as exc:  # noqa: BLE001 - reported as the row's error
        return {"pipeline": name, "batch": 1, "error": str(exc).splitlines()[0][:300]}
