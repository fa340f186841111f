"""Training on many processes: who this process is, its device, and the few collectives needed.

torchrun (``python -m torch.distributed.run``) starts one process per GPU (or per share of the
CPU) and sets RANK, WORLD_SIZE and LOCAL_RANK in each. ``session`` reads them and opens the
process group: NCCL when the device is a GPU, gloo on the CPU. Without them, or with a world of
one, training is one plain process exactly as before: no process group, no wrapper, no
collective, and every ``Comm`` method below is the identity.

Rank 0 is the only process that reads or writes the run folder; the others get what they need
(the state to resume, the answer to "may this run start?") from it through ``from_main``, so a
multi-node run does not need a shared run folder, and an error raised on rank 0 is raised on
every rank instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from .io import DataError

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

T = TypeVar("T")

_opened_group = False  # set once this process has opened a process group (see opened_group)


def opened_group() -> bool:
    """True once ``session`` has opened a process group in this process: its threads live on
    until the process ends (train_cli.end_process says why that matters)."""
    return _opened_group


def ranks_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's variables, or None when none is set.

    Raises ValueError naming the variable when only some are set or one is not a valid number.
    """
    environ = os.environ if environ is None else environ
    present = [k for k in ENV_VARS if k in environ]
    if not present:
        return None
    missing = [k for k in ENV_VARS if k not in environ]
    if missing:
        raise ValueError(f"distributed run: {present} set but {missing} not; torchrun sets all of "
                         f"{list(ENV_VARS)} (start the run with torchrun, or unset {present})")
    values = {}
    for k in ENV_VARS:
        try:
            values[k] = int(environ[k])
        except ValueError:
            raise ValueError(f"distributed run: environment variable {k}={environ[k]!r} is not an integer") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1:
        raise ValueError(f"distributed run: WORLD_SIZE={world} must be >= 1")
    if not 0 <= rank < world:
        raise ValueError(f"distributed run: RANK={rank} must be in [0, WORLD_SIZE={world})")
    if local < 0:
        raise ValueError(f"distributed run: LOCAL_RANK={local} must be >= 0")
    return rank, world, local


@dataclass(frozen=True)
class Comm:
    """This process's place in the run. ``backend`` None: one plain process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when there are other processes to talk to."""
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes files and reads the run folder."""
        return self.rank == 0

    def describe(self) -> str:
        if not self.active:
            return str(self.device)
        return f"{self.device.type} x {self.world_size} processes ({self.backend})"

    def sum(self, *values: float) -> tuple[float, ...]:
        """Element-wise sums of ``values`` over all processes (float64)."""
        if not self.active:
            return tuple(float(v) for v in values)
        t = torch.tensor(values, dtype=torch.float64, device=self._tensor_device())
        dist.all_reduce(t)
        return tuple(t.tolist())

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order, on every process (pickled; keep it small)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 only; its result, or the DataError / ValueError it raised, on
        every rank."""
        if not self.active:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [(fn(), None)]
            except (DataError, ValueError) as exc:
                box = [(None, exc)]
        dist.broadcast_object_list(box, src=0)
        value, error = box[0]
        if error is not None:
            raise error
        return value

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm running statistics).

        Plain batch norm updates its running statistics from each process's own batches, so
        after a training step they differ between processes; rank 0's are the ones its
        checkpoint holds, and validation must use them on every rank.
        """
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train: DistributedDataParallel around ``model`` when there are other
        processes (gradients averaged over them at each step), else ``model`` itself."""
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _tensor_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def sync_batch_norm(model: torch.nn.Module, comm: Comm) -> torch.nn.Module:
    """Batch norm over the whole step's batch on GPUs; per process on the CPU.

    torch's SyncBatchNorm refuses CPU tensors in training ("expected input tensor to be on GPU"),
    so with gloo each process normalises with the statistics of its own batch and rank 0's
    running statistics are the ones kept (see ``Comm.broadcast_buffers``). The state_dict keys
    are the same either way, so a checkpoint loads into the plain model.
    """
    if not comm.active or not has_batch_norm(model):
        return model
    if comm.device.type == "cuda":
        log.info("batch norm: SyncBatchNorm over the %d processes' batches", comm.world_size)
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log.info("batch norm: per process on the CPU (torch's SyncBatchNorm needs GPUs); "
             "statistics of each process's own batch, rank 0's running statistics kept")
    return model


def _process_device(device: torch.device, local_rank: int) -> torch.device:
    """One GPU per process on a node: cuda:LOCAL_RANK; the CPU stays the CPU."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"distributed run: LOCAL_RANK={local_rank} but torch sees {count} CUDA device(s) on "
                         f"this node; start at most {count} process(es) per node (--nproc-per-node)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


@contextmanager
def session(device: torch.device, environ: Mapping[str, str] | None = None) -> Iterator[Comm]:
    """The ``Comm`` of this process for the length of a run.

    Opens the process group from torchrun's variables (and closes it after) unless the caller
    opened one already, which is then used as it is. Raises ValueError naming the problem with
    the variables or the device.
    """
    ranks = ranks_from_env(environ)
    if ranks is None or ranks[1] == 1:
        yield Comm(device=device)
        return
    rank, world, local = ranks
    device = _process_device(device, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        global _opened_group
        _opened_group = True
    elif dist.get_backend() != backend or dist.get_world_size() != world:
        raise ValueError(f"distributed run: an open process group ({dist.get_backend()}, {dist.get_world_size()} "
                         f"processes) does not fit this run ({backend}, WORLD_SIZE={world})")
    try:
        yield Comm(device=device, rank=rank, world_size=world, local_rank=local, backend=backend)
        dist.barrier()  # every rank leaves when rank 0 has written the run folder, not before
    finally:
        if owned:
            dist.destroy_process_group()
