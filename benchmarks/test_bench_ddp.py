"""Training throughput on the CPU with 1 and 2 processes: usseg-train under torchrun (gloo).

    .venv/bin/python -m pytest benchmarks/test_bench_ddp.py --benchmark-enable   (or usseg-bench)

Each round is one whole torchrun run of the demo profile's lite network (240x320, batch 4 per
process) on 32 phantom frames, recipe "none" (the NLM recipe would time preprocessing, not
training) and the HD loss off. The timed figure is end to end: process start, imports and data
loading included, so frames/s in the report is frames trained / wall time. extra_info adds the
steady-state figure the run itself measured (median over epochs after the first of the epoch's
train frames / train seconds), which is the one to read for "how much faster per epoch".
With 2 processes torchrun gives each one thread (OMP_NUM_THREADS=1); with 1 process torch uses
every core, so both rows use the whole machine.

Training throughput is only worth publishing from an idle machine: a busy one stalls a process's
threads and can make 2 single-thread processes look many times faster than 1 two-thread one.
Each run first waits (up to ``IDLE_WAIT_S``) for the 1-minute load average to fall below
``IDLE_LOAD``, and records the load before and after; the report publishes the figure only when
the load before was below ``IDLE_LOAD``. Skipped with --quick.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from .conftest import quick
from .harness import loadavg

EPOCHS = 4
FRAMES = 32
SIZE = (240, 320)  # the lite network's input: no resizing
IDLE_LOAD = 0.5    # 1-minute load average below which the machine counts as idle
IDLE_WAIT_S = 180


def wait_for_idle() -> tuple[float | None, float]:
    """(load average when starting, seconds waited)."""
    start = time.monotonic()
    while (load := loadavg()) is not None and load >= IDLE_LOAD and time.monotonic() - start < IDLE_WAIT_S:
        time.sleep(5)
    return load, round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """32 phantom frames at 240x320, prepared into a mask folder, and the run's config file."""
    from usseg.train.phantom import PhantomConfig, write_dataset
    from usseg.train.prepare import main as prepare_main

    root = tmp_path_factory.mktemp("ddp_bench")
    write_dataset(root / "seed", count=FRAMES, seed=3, cfg=PhantomConfig(height=SIZE[0], width=SIZE[1]))
    assert prepare_main(["--annotations", str(root / "seed" / "annotations.json"),
                         "--images", str(root / "seed" / "images"), "--out", str(root / "data")]) == 0
    config = root / "bench.json"
    config.write_text(json.dumps({"recipe": "none", "hd_max": 0.0, "val_every": 100}))
    return root / "data", config


def _train(data, config, out, nproc: int) -> tuple[dict, list[dict]]:
    """One torchrun run; (metrics.json summary, per-epoch history from last.pt)."""
    import torch

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "usseg.train.train_cli", "--data", str(data), "--out", str(out), "--profile", "demo",
           "--config", str(config), "--epochs", str(EPOCHS), "--device", "cpu", "--no-progress", "--overwrite"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    final = json.loads((out / "metrics.json").read_text())["final"]
    return final, torch.load(out / "last.pt", weights_only=True)["history"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_train_throughput(benchmark, bench_data, tmp_path, nproc):
    if quick():
        pytest.skip("training throughput needs an idle machine and minutes; run without --quick")
    data, config = bench_data
    load_before, waited = wait_for_idle()
    runs = []
    benchmark.group = "train (torchrun)"
    benchmark.pedantic(lambda: runs.append(_train(data, config, tmp_path / "run", nproc)),
                       rounds=3, warmup_rounds=0, iterations=1)
    final = runs[-1][0]
    assert final["processes"] == nproc
    steady = statistics.median(h["frames_per_s"] for _, history in runs for h in history if h["epoch"] > 0)
    benchmark.extra_info.update(stage="train", impl="usseg", provider=f"cpu x{nproc}", batch=4,
                                frames=EPOCHS * final["frames"]["train"],
                                recipe=f"demo lite 240x320, {EPOCHS} epochs, end to end",
                                epoch_frames_per_s=round(steady, 2), load_before=load_before,
                                load_after=loadavg(), idle_wait_s=waited, idle_load=IDLE_LOAD,
                                weights={"trained": False, "note": "trains from random init"})
