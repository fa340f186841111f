"""Training on many processes: usseg-train under torchrun with 2 CPU processes (gloo), its
checkpoints in one process, the reduced validation figures, and resuming with another world size."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from usseg.train import loop, steps
from usseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from usseg.train.config import TrainConfig, resolve_config
from usseg.train.dataset import make_loader, make_val_loader, shard_batches
from usseg.train.distributed import ranks_from_env, session
from usseg.train.maskfolder import write_split
from usseg.train.metrics import by_class
from usseg.train.train_cli import end_process, main

EPOCHS = 4
VAL_FRAMES = 5   # batches of 2: [0, 1] [2, 3] [4] -> rank 0 gets two batches (3 frames), rank 1 one
BATCH = 2


def five_val_frames(source: Path, dest: Path) -> Path:
    """A copy of the phantom folder whose val split has VAL_FRAMES frames (uneven over 2 ranks)."""
    shutil.copytree(source, dest)
    rows = [line.split(",") for line in (dest / "split.csv").read_text().split()[1:]]
    ids = [i for i, split in rows if split != "test"]
    write_split(dest / "split.csv", {i: "val" if k < VAL_FRAMES else "train" for k, i in enumerate(ids)})
    return dest


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """usseg-train as torchrun starts it: 2 local CPU processes, rendezvous on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "usseg.train.train_cli", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ddp_run(phantom_data, tmp_path_factory):
    """A tiny model trained for EPOCHS epochs by 2 gloo processes: (RUN, data folder, log text)."""
    root = tmp_path_factory.mktemp("ddp")
    data = five_val_frames(phantom_data, root / "data")
    (root / "c.json").write_text(json.dumps({"hd_max": 0.0, "lr": 3e-3}))
    run = root / "run"
    done = torchrun(["--data", str(data), "--out", str(run), "--profile", "tiny", "--config", str(root / "c.json"),
                     "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--device", "cpu", "--no-progress"])
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return run, data, log


def _config(run: Path) -> TrainConfig:
    return TrainConfig(**json.loads((run / "config.json").read_text()))


# -- under torchrun ----------------------------------------------------------------------------

def test_ddp_run_learns_and_only_rank0_speaks(ddp_run):
    run, _, log = ddp_run
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [v["train_loss"] for v in metrics["validations"]]
    assert len(losses) == EPOCHS and losses[-1] < losses[0]
    assert metrics["final"]["processes"] == 2
    for name in ("best.pt", "last.pt", "config.json", "metrics.json", "tb"):
        assert (run / name).exists()
    assert log.count("training tiny UNet") == 1                        # one rank logs progress
    assert "cpu x 2 processes (gloo)" in log and "4 per step" in log  # effective batch stated
    assert "SyncBatchNorm needs GPUs" in log                            # plain BN on CPU, said so
    assert "rank 1" not in log                                          # the other rank is quiet


def test_ddp_checkpoint_loads_in_one_process(ddp_run):
    run, _, _ = ddp_run
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(run / name)
        assert not [k for k in state["model_state_dict"] if k.startswith("module.")]
        a, b = model_from_checkpoint(state), model_from_checkpoint(load_checkpoint(run / name))  # strict load
        x = torch.rand(3, 1, 64, 80, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(a(x), b(x))


def test_reduced_val_dice_equals_one_process(ddp_run, tmp_path):
    """The Dice that the 2 ranks computed on their own shards (rank 0's weights and batch-norm
    statistics on both) equals that of last.pt evaluated by one process on all val frames."""
    run, data, _ = ddp_run
    cfg = _config(run)
    trainer = loop.Trainer(cfg, data, tmp_path / "scratch", progress=False)  # the same val frames
    assert len(trainer.val_set) == VAL_FRAMES
    model = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    last = json.loads((run / "metrics.json").read_text())["validations"][-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        loader = make_loader(trainer.val_set, cfg.batch_size, False, cfg.seed, 0, 0)
        loss, dice = loop.validate(model, loader, trainer.loss_fn, last["hd_weight"], 4, torch.device("cpu"), False)
    finally:
        torch.set_num_threads(threads)
    assert by_class(dice, trainer.classes) == last["val_dice"]
    assert loss == pytest.approx(last["val_loss"], rel=1e-6)


def test_ddp_last_resumes_in_one_process(ddp_run, tmp_path):
    run, data, _ = ddp_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = ["--data", str(data), "--out", str(copy), "--resume", "--epochs", str(EPOCHS + 1), "--no-progress"]
    assert main(args) == 0  # no torchrun variables: one plain process
    state = torch.load(copy / "last.pt", weights_only=True)
    assert state["epoch"] == EPOCHS and [h["epoch"] for h in state["history"]] == list(range(EPOCHS + 1))
    assert json.loads((copy / "metrics.json").read_text())["final"]["processes"] == 1


# -- the parts, in one process -----------------------------------------------------------------

@pytest.mark.parametrize("env, expected", [
    ({}, None),                                                   # no torchrun: one plain process
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, 2, 1)),
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, (0, 1, 0)),  # torchrun with one process
])
def test_ranks_from_env(env, expected):
    assert ranks_from_env(env) == expected


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, r"\['WORLD_SIZE', 'LOCAL_RANK'\] not"),                  # half set
    ({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK='a' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, r"RANK=2 must be in \[0, WORLD_SIZE=2\)"),
    ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE=0 must be >= 1"),
])
def test_ranks_from_env_errors_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        ranks_from_env(env)


def test_world_of_one_is_a_plain_process():
    with session(torch.device("cpu"), {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) as comm:
        assert not comm.active and comm.is_main and comm.sum(2.0, 3) == (2.0, 3.0)
        model = torch.nn.BatchNorm2d(2)
        assert comm.wrap(model) is model and comm.gather("x") == ["x"]


def test_a_process_without_a_group_ends_as_usual():
    assert end_process(3) == 3  # pytest goes on: no process group was opened here


def test_a_worker_that_opened_a_group_ends_at_once_with_its_code():
    """After a multi-process run the worker's log and output are flushed and it ends with its own
    exit code, without the interpreter's teardown of the group's threads (train_cli.end_process)."""
    script = ("import logging, sys\n"
              "from usseg.train import distributed, train_cli\n"
              "distributed._opened_group = True  # as session() sets it when it opens a group\n"
              "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
              "logging.getLogger('usseg').warning('last log line')\n"
              "print('last output', end='')\n"
              "train_cli.end_process(3)\n"
              "print(' not reached')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and done.stdout == "last output" and done.stderr.strip() == "last log line"


@pytest.mark.parametrize("count, batch, world", [
    (5, 2, 2),   # uneven: 2 batches and 1 batch
    (2, 4, 3),   # fewer batches than ranks: two ranks get none
    (9, 3, 3),   # even
])
def test_shard_batches_deal_whole_batches_once(count, batch, world):
    shards = [shard_batches(count, batch, rank, world) for rank in range(world)]
    batches = sorted(b for shard in shards for b in shard)
    assert batches == shard_batches(count, batch)                   # the batches of one process
    assert sorted(i for b in batches for i in b) == list(range(count))  # each frame once


def test_sharded_validation_equals_one_process(phantom_data, tmp_path):
    """Shards validated apart and combined give one process's figures, bit for bit."""
    data = five_val_frames(phantom_data, tmp_path / "data")
    trainer = loop.Trainer(resolve_config("tiny", overrides={"device": "cpu"}), data, tmp_path / "run", progress=False)
    args = (trainer.loss_fn, 0.1, 4, torch.device("cpu"), False)  # HD weight 0.1: both loss terms
    whole = loop.validate(trainer.model, make_val_loader(trainer.val_set, BATCH), *args)
    parts = [b for rank in range(2)
             for b in steps.validate_batches(trainer.model, make_val_loader(trainer.val_set, BATCH, rank, 2), *args)]
    assert len(parts) == 3
    combined = steps.combine_validation(parts[::-1], 4)  # in any order
    assert combined[0] == whole[0] and np.array_equal(combined[1], whole[1], equal_nan=True)
