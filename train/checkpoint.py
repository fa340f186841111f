"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and JSON-like values:
    epoch, model_state_dict, optimizer_state_dict, scheduler_state_dict (or None),
    best_val_score, model_config (dict), contract (dict, see usseg.runtime.contract),
    train_config (dict), val_dice (dict class -> Dice), history (list of per-epoch dicts),
    val_ids (the ids of the frames val Dice was measured on)
With a weight average (train config ``ema``), model_state_dict is the average (what evaluation
and export use) and trained_state_dict the weights training goes on from; ema_updates counts
the average's updates.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from usseg.runtime.contract import Contract, ContractError

from .io import DataError, atomic_path
from .model import ModelConfig, build_model

REQUIRED_KEYS = ("epoch", "model_state_dict", "model_config", "contract")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Serialised in memory first, then written atomically: a full disk is then an OSError named by
    the file (torch.save writing to the disk itself reports one as a RuntimeError from its zip
    writer), and the previous checkpoint stays as it was."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path, "the checkpoint") as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for a corrupt or unsafe file)
        raise DataError(f"{path}: not a readable usseg checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a usseg checkpoint (expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise DataError(f"{path}: not a usseg checkpoint, missing key(s) {missing}")
    return state


def checkpoint_contract(state: dict[str, Any], path: str | os.PathLike = "checkpoint") -> Contract:
    try:
        return Contract.from_dict(state["contract"])
    except ContractError as exc:
        raise DataError(f"{path}: {exc}") from None


def checkpoint_val_ids(state: dict[str, Any], path: str | os.PathLike, known: list[str]) -> list[str]:
    """The ids of the frames the run measured val Dice on, each one of ``known`` (the data set's
    train ids: a value from the file never names a path by itself)."""
    ids = state.get("val_ids")
    if ids is None:
        raise DataError(f"{path}: the checkpoint does not record its val frames (written by an older usseg); "
                        "train again, or give the data set a val split in split.csv")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{path}: key 'val_ids': expected a non-empty list of frame ids")
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise DataError(f"{path}: key 'val_ids': {len(unknown)} of its {len(ids)} val frames are not train frames "
                        f"of this data set (first: {unknown[0][:80]!r}); was it trained on another one?")
    return list(ids)


def model_from_checkpoint(state: dict[str, Any], path: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the model from the configuration the checkpoint carries and load its weights."""
    try:
        cfg = ModelConfig.from_dict(state["model_config"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: key 'model_config': {exc}") from None
    contract = checkpoint_contract(state, path)
    model = build_model(cfg, contract.num_classes)
    try:
        model.load_state_dict(state["model_state_dict"])
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit model configuration {cfg.name!r} "
                        f"({str(exc).splitlines()[0]})") from None
    return model.eval()
