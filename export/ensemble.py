"""A fold ensemble as one network: the K best.pt of a ``usseg train --folds K`` run, their class
probabilities averaged in the graph.

The network outputs the log of the averaged probabilities as its logits, so every output kind
means what it means for one model: ``probs`` (softmax of those logits) is the average itself,
``labels`` its argmax, and the runtime's argmax of ``logits`` picks the same class. Each fold
chose its own clean-up on its own val frames; the ensemble keeps the steps that every fold chose
(none was measured on the ensemble: its folds have seen each other's val frames).

A frame costs K forward passes; ``frame_cost_ms`` measures the exported graph on this CPU so
that the summary states it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from usseg.runtime.cleanup import STEPS
from usseg.runtime.contract import Contract, ContractError

from .errors import ExportError

MAX_FOLDS = 100  # a bound on the K read from folds.json (a file, so untrusted)


class FoldEnsemble(torch.nn.Module):
    """log(mean over the folds of softmax(fold(x)))."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        super().__init__()
        self.folds = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.folds]).mean(0)
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))


def fold_checkpoints(run: Path) -> list[Path]:
    """RUN/fold_0/best.pt ... for the K that RUN/folds.json gives (its paths are not read)."""
    path = run / "folds.json"
    if not path.is_file():
        raise ExportError(f"--ensemble: {path} not found; give the folder of a `usseg train --folds K` run")
    try:
        k = json.loads(path.read_text()).get("folds")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise ExportError(f"{path}: not a folds.json written by usseg train --folds") from None
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= MAX_FOLDS:
        raise ExportError(f"{path}: key 'folds' must be an integer from 2 to {MAX_FOLDS}, got {str(k)[:40]}")
    paths = [run / f"fold_{i}" / "best.pt" for i in range(k)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ExportError(f"--ensemble: {', '.join(missing)} not found (a fold without best.pt; finish the run "
                          f"with usseg train --folds {k} --resume)")
    return paths


def load_ensemble(run: Path) -> tuple[FoldEnsemble, Contract]:
    """(the ensemble, the first fold's contract with the clean-up every fold chose); every fold
    must take the same input (classes, size, recipe)."""
    from usseg.train.checkpoint import checkpoint_contract, load_checkpoint, model_from_checkpoint

    models, contracts = [], []
    try:
        for path in fold_checkpoints(run):
            state = load_checkpoint(path)
            models.append(model_from_checkpoint(state, path))
            contracts.append(checkpoint_contract(state, path))
    except ContractError as exc:
        raise ExportError(str(exc)) from None
    first = contracts[0]
    for i, c in enumerate(contracts[1:], start=1):
        for field in ("classes", "input", "recipe"):
            if getattr(c, field) != getattr(first, field):
                raise ExportError(f"{run / f'fold_{i}' / 'best.pt'}: its contract's {field!r} differs from fold 0's; "
                                  f"the folds of one run share their input")
    shared = {step: tuple(name for name in getattr(first.postprocess, step)
                          if all(name in getattr(c.postprocess, step) for c in contracts)) for step in STEPS}
    contract = replace(first, postprocess=replace(first.postprocess, **shared),
                       provenance={**first.provenance, "ensemble_folds": len(models)})
    return FoldEnsemble(models).eval(), contract


def frame_cost_ms(path: Path, contract: Contract, repeats: int = 20) -> float:
    """Median wall time of one frame through the graph at ``path`` on this CPU (ONNX Runtime)."""
    import onnxruntime as ort

    spec = contract.input
    frame = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {spec.name: frame})  # warm-up: the first run allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {spec.name: frame})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
