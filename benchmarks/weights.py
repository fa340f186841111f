"""Trained weights for every timed model, made once and cached beside the exported models.

Post-processing time depends on what the network outputs: an untrained network's label maps are
speckled with thousands of blobs and make the seed's cv2 + scikit-image rules several times
slower than on a real spine label map. So every model the benchmarks time is trained on the
built-in phantom first, evaluated on its test split, and only then exported and timed.

    <cache>/data-<key>/                    the phantom, prepared into a split mask folder
    <cache>/<model>-<key>/best.pt          the trained checkpoint (best mean val Dice)
    <cache>/<model>-<key>/weights.json     what it was trained on, how long, its test Dice
    <cache>/<model>-<key>/<precision>-b<batch>[-graph<HxW>].onnx   exports, made when first needed

The key hashes the training configuration, the data and the package version (plus
``WEIGHTS_VERSION``, raised when this recipe changes), so a changed configuration trains again
and an unchanged one is reused. ``usseg-bench --model`` times a given model instead.

The chains below are what the report compares: the first model is timed through the seed-style
pipeline and through usseg (same network, weights, input size, recipe: what the engineering
alone buys); each further model changes exactly one thing against the one before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from usseg.runtime.provenance import usseg_version

log = logging.getLogger("usseg.bench")

WEIGHTS_VERSION = 1


@dataclass(frozen=True)
class DataSpec:
    """A phantom data set: ``count`` frames of height x width from ``seed``."""

    count: int
    height: int
    width: int
    seed: int = 1

    def describe(self) -> str:
        return f"phantom, {self.count} frames {self.height}x{self.width} (seed {self.seed})"

    def key(self) -> str:
        return _digest({"data": [self.count, self.height, self.width, self.seed]})[:12]


@dataclass(frozen=True)
class BenchModel:
    """A model configuration to train for the benchmarks; ``changes`` says what it changes
    against the model before it in its chain."""

    name: str
    network: str                 # the network's name in the report
    config: Any                  # usseg.train.config.TrainConfig
    data: DataSpec
    changes: str = ""

    @property
    def size(self) -> tuple[int, int]:
        m = self.config.model_config()
        return m.height, m.width

    def key(self) -> str:
        return _digest({"config": self.config.to_dict(), "data": self.data.key(), "usseg": usseg_version(),
                        "weights": WEIGHTS_VERSION})[:12]


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


FULL_DATA = DataSpec(count=70, height=480, width=640)
QUICK_DATA = DataSpec(count=24, height=128, width=160)

# Epochs: the fewest that give label maps like the phantom's ground truth (class shares within a
# few tenths of a percent, one MID / VTB / EPI blob per frame); docs in README "Benchmarks".
FULL_EPOCHS = {"seed": 20, "lite": 40}
QUICK_EPOCHS = 40


def _config(profile: str, **changes: Any):
    from usseg.train.config import PROFILES

    return replace(PROFILES[profile], num_workers=0, offline_copies=0, device="auto", **changes)


def chain(quick: bool) -> tuple[BenchModel, ...]:
    """The models the benchmarks compare, in order; see the module docstring."""
    if quick:
        d, e = QUICK_DATA, QUICK_EPOCHS
        big, small = {"height": 128, "width": 160}, {"height": 64, "width": 80}
        return (
            BenchModel("tiny-128x160-seed", "tiny UNet",
                       _config("tiny", recipe="seed", epochs=e, val_every=10, model_overrides=big), d),
            BenchModel("tiny-64x80-seed", "tiny UNet",
                       _config("tiny", recipe="seed", epochs=e, val_every=10, model_overrides=small), d,
                       "input size: 128x160 -> 64x80"),
            BenchModel("lite-64x80-seed", "lite UNet",
                       _config("demo", epochs=e, val_every=10, model_overrides=small), d,
                       "network: tiny UNet -> lite UNet"),
            BenchModel("lite-64x80-realtime", "lite UNet",
                       _config("demo", recipe="realtime", epochs=e, val_every=10, model_overrides=small), d,
                       "recipe: seed -> realtime (no NLM)"),
        )
    d = FULL_DATA
    seed_epochs, lite_epochs = FULL_EPOCHS["seed"], FULL_EPOCHS["lite"]
    return (
        BenchModel("seed-480x640-seed", "seed UNet",
                   _config("seed", epochs=seed_epochs, val_every=5, schedule="cosine"), d),
        BenchModel("lite-480x640-seed", "lite UNet",
                   _config("demo", epochs=lite_epochs, model_overrides={"height": 480, "width": 640}), d,
                   "network: seed UNet -> lite UNet"),
        BenchModel("lite-240x320-seed", "lite UNet", _config("demo", epochs=lite_epochs), d,
                   "input size: 480x640 -> 240x320"),
        BenchModel("lite-240x320-realtime", "lite UNet", _config("demo", recipe="realtime", epochs=lite_epochs), d,
                   "recipe: seed -> realtime (no NLM)"),
    )


# -- a model ready to time ------------------------------------------------------------------------------
@dataclass
class ModelEntry:
    """A trained (or given) model: where its checkpoint is, how to export it, what it was."""

    name: str
    network: str
    height: int
    width: int
    recipe: str
    folder: Path                         # exports are cached here
    weights: dict[str, Any]              # JSON: trained or not, data, epochs, test Dice
    checkpoint: Path | None = None       # PyTorch weights (the seed-style rows need them)
    onnx: Path | None = None             # a given exported model (fp32, batch 1)
    calibration: Path | None = None      # int8 calibration frames
    changes: str = ""
    exports: dict[str, str] = field(default_factory=dict)

    @property
    def input(self) -> str:
        return f"{self.height}x{self.width}"

    def label(self) -> str:
        return f"{self.network} {self.input}, {self.recipe} recipe"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "network": self.network, "height": self.height, "width": self.width,
                "recipe": self.recipe, "folder": str(self.folder), "weights": self.weights,
                "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
                "onnx": None if self.onnx is None else str(self.onnx),
                "calibration": None if self.calibration is None else str(self.calibration), "changes": self.changes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEntry:
        path = lambda k: None if d.get(k) is None else Path(d[k])
        return cls(d["name"], d["network"], int(d["height"]), int(d["width"]), d["recipe"], Path(d["folder"]),
                   dict(d["weights"]), path("checkpoint"), path("onnx"), path("calibration"), d.get("changes", ""))

    def can_export(self, precision: str = "fp32", batch: str = "1", graph: tuple[int, int] | None = None) -> bool:
        if self.checkpoint is not None:
            return precision != "int8" or self.calibration is not None
        return self.onnx is not None and (precision, batch, graph) == ("fp32", "1", None)

    def export(self, precision: str = "fp32", batch: str = "1", graph: tuple[int, int] | None = None) -> Path:
        """The model exported in ``precision`` with a fixed (1) or dynamic batch, the recipe in the
        graph for raw frames of ``graph`` (H, W) if given; made once, then reused."""
        if self.checkpoint is None:
            if self.onnx is not None and (precision, batch, graph) == ("fp32", "1", None):
                return self.onnx
            raise ValueError(f"{self.name}: only the given model file can be timed (no checkpoint to export "
                             f"{precision}, batch {batch}{', in-graph preprocessing' if graph else ''} from)")
        suffix = f"-graph{graph[0]}x{graph[1]}" if graph else ""
        path = self.folder / f"{precision}-b{batch}{suffix}.onnx"
        if not path.is_file():
            from usseg.export.pipeline import ExportOptions, export

            t = time.perf_counter()
            export(ExportOptions(checkpoint=self.checkpoint, out=path, precision=precision,
                                 batch=None if batch == "dynamic" else 1, graph_preprocess=graph,
                                 output="labels" if graph else "logits",
                                 calibration=self.calibration if precision == "int8" else None, verify=False))
            log.info("exported %s (%s, batch %s%s) in %.1f s", path, precision, batch, suffix, time.perf_counter() - t)
        return path

    def torch_model(self):
        """The PyTorch network with its trained weights, for the seed-style pipeline."""
        from usseg.train.checkpoint import load_checkpoint, model_from_checkpoint

        if self.checkpoint is None:
            raise ValueError(f"{self.name}: no PyTorch checkpoint, so no seed-style rows")
        return model_from_checkpoint(load_checkpoint(self.checkpoint), self.checkpoint)


# -- training and caching -----------------------------------------------------------------------------
def prepared_data(spec: DataSpec, cache: Path) -> Path:
    """The phantom ``spec`` as a split mask folder (made once)."""
    import tempfile

    from usseg.train.phantom import PhantomConfig, write_dataset
    from usseg.train.prepare import main as prepare_main

    folder = cache / f"data-{spec.key()}"
    if (folder / "split.csv").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".phantom-") as tmp:
        write_dataset(Path(tmp), count=spec.count, seed=spec.seed,
                      cfg=PhantomConfig(height=spec.height, width=spec.width))
        code = prepare_main(["--annotations", str(Path(tmp) / "annotations.json"), "--images",
                             str(Path(tmp) / "images"), "--out", str(folder), "--overwrite"])
    if code != 0 or not (folder / "split.csv").is_file():
        raise RuntimeError(f"could not prepare the benchmark data set {folder} (exit code {code})")
    return folder


def trained(model: BenchModel, cache: Path) -> ModelEntry:
    """``model`` trained on its phantom and evaluated on the test split, from the cache if there."""
    folder = cache / f"{model.name}-{model.key()}"
    height, width = model.size
    data = prepared_data(model.data, cache)
    entry = ModelEntry(model.name, model.network, height, width, model.config.recipe, folder, {},
                       checkpoint=folder / "best.pt", calibration=data, changes=model.changes)
    info = folder / "weights.json"
    if info.is_file():
        entry.weights = json.loads(info.read_text())
        return entry
    from usseg.runtime.fileio import replace_dir, write_json
    from usseg.train.loop import train

    log.info("training %s for the benchmarks (once; cached in %s)", model.name, folder)
    with replace_dir(folder) as tmp:
        summary = train(model.config, data, tmp / "run", overwrite=True, progress=False)
        (tmp / "run" / "best.pt").rename(tmp / "best.pt")
        (tmp / "run" / "last.pt").unlink(missing_ok=True)  # optimiser state: not needed to time
        weights = describe_training(model, summary, evaluate_test_split(tmp / "best.pt", data))
        write_json(tmp / "weights.json", weights)
    entry.weights = weights
    log.info("%s: %s", model.name, weights_line(weights))
    return entry


def evaluate_test_split(checkpoint: Path, data: Path) -> dict[str, Any]:
    from usseg.train.evaluate import evaluate, load_predictor
    from usseg.train.maskfolder import open_mask_folder

    predictor, _ = load_predictor(checkpoint)
    result = evaluate(predictor, open_mask_folder(data), "test")
    return {"dice": result["dice"], "mean_dice": result["mean_dice"], "frames": result["frames"]}


def describe_training(model: BenchModel, summary: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    return {"trained": True, "source": "trained by usseg-bench", "key": model.key(),
            "data": model.data.describe(), "split": summary.get("frames"),
            "epochs": model.config.epochs, "best_epoch": summary.get("best_epoch"),
            "train_seconds": summary.get("train_seconds"), "device": summary.get("device"),
            "test_dice": test["dice"], "mean_test_dice": test["mean_dice"], "test_frames": test["frames"],
            "train_config": model.config.to_dict(), "usseg": usseg_version()}


def given(path: Path, cache: Path) -> ModelEntry:
    """A model given with ``--model``: a checkpoint (.pt: exported here, seed-style rows too) or an
    exported model (.onnx: usseg rows only)."""
    source = str(path)  # as the user gave it: reports name no machine path they did not type
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: file not found")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    folder = cache / f"given-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".onnx":
        from usseg.runtime.model_io import read_model

        contract = read_model(path).contract
        prov = dict(contract.provenance)
        weights = {"trained": "given", "source": source, "epoch": prov.get("epoch"),
                   "val_dice": prov.get("val_dice"), "mean_val_dice": prov.get("mean_val_dice"),
                   "data_fingerprint": prov.get("data_fingerprint"),
                   "note": "exported model given with --model; no PyTorch weights, so no seed-style rows"}
        return ModelEntry("given", str(prov.get("model", "given")) + " UNet", contract.input.height,
                          contract.input.width, contract.recipe.name, folder, weights, onnx=path)
    from usseg.train.checkpoint import checkpoint_contract, load_checkpoint

    state = load_checkpoint(path)
    contract = checkpoint_contract(state, path)
    prov = dict(contract.provenance)
    epochs = (state.get("train_config") or {}).get("epochs")
    weights = {"trained": "given", "source": source, "epoch": state.get("epoch"), "epochs": epochs,
               "val_dice": state.get("val_dice"), "mean_val_dice": prov.get("mean_val_dice"),
               "data_fingerprint": state.get("data_fingerprint")}
    name = str(state.get("model_config", {}).get("name", "given"))
    from .models import calibration_folder

    return ModelEntry("given", f"{name} UNet", contract.input.height, contract.input.width, contract.recipe.name,
                      folder, weights, checkpoint=path, calibration=calibration_folder(cache))


def weights_line(w: dict[str, Any]) -> str:
    """One line: trained or not, on what, how long, how good."""
    if w.get("trained") is True:
        dice = w.get("test_dice") or {}
        per = ", ".join(f"{k} {v:.2f}" for k, v in dice.items() if v is not None)
        mean = w.get("mean_test_dice")
        split = w.get("split") or {}
        parts = "/".join(str(split.get(k, "?")) for k in ("train", "val", "test"))
        return (f"trained on {w.get('data')} (train/val/test {parts}), {w.get('epochs')} epochs "
                f"(best {None if w.get('best_epoch') is None else w['best_epoch'] + 1}), test Dice "
                f"{'-' if mean is None else f'{mean:.3f}'} ({per})")
    if w.get("trained") == "given":
        mean = w.get("mean_val_dice")
        return (f"given: {w.get('source')}, epoch {w.get('epoch')}, val Dice "
                f"{'-' if mean is None else f'{mean:.3f}'} (test Dice not measured here)")
    return f"untrained ({w.get('note', 'random weights')})"
