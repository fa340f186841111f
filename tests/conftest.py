import json
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "seed" / "sample" / "Dataset"
USGRA = SHARED / "datasets" / "usgra-seg"


@pytest.fixture
def tiny_seed_dataset(tmp_path):
    """Three 60x80 frames in seed format: full, EPI-less, and empty."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    annotations = {
        "a": [["MID", "line", [[40, 5], [41, 55]]], ["VTB", "rect", [[20, 40], [60, 52]]],
              ["EPI", "line", [[28, 25], [52, 25]]]],
        "b": [["MID", "line", [[38, 4], [40, 50]]], ["VTB", "rect", [[15, 42], [65, 55]]]],
        "c": [],
    }
    for key in annotations:
        cv2.imwrite(str(images / f"{key}.png"), rng.integers(0, 255, (60, 80), dtype=np.uint8))
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(annotations))
    return path, images


PHANTOM_SIZE = (120, 160)
TINY_EPOCHS = 80


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory):
    """A small prepared phantom mask folder (24 frames of 120x160) shared by the session."""
    from usseg.train.phantom import PhantomConfig, write_dataset
    from usseg.train.prepare import main as prepare_main

    root = tmp_path_factory.mktemp("phantom")
    write_dataset(root / "seed", count=24, seed=7, cfg=PhantomConfig(height=PHANTOM_SIZE[0], width=PHANTOM_SIZE[1]))
    assert prepare_main(["--annotations", str(root / "seed" / "annotations.json"),
                         "--images", str(root / "seed" / "images"), "--out", str(root / "data")]) == 0
    return root / "data"


@pytest.fixture(scope="session")
def tiny_run(phantom_data, tmp_path_factory):
    """A tiny model trained on the phantom until it finds the structures (tests/test_trained_model.py
    checks that it does): RUN/best.pt and RUN/last.pt. About 0.1 s per epoch on 2 cores."""
    from usseg.train.train_cli import main as train_main

    run = tmp_path_factory.mktemp("run")
    assert train_main(["--data", str(phantom_data), "--out", str(run), "--profile", "tiny",
                       "--epochs", str(TINY_EPOCHS), "--device", "cpu", "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, phantom_data, tmp_path_factory):
    """The tiny model exported to ONNX fp32 (verified against PyTorch on phantom frames)."""
    from usseg.export.cli import main as export_main

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert export_main(["--model", str(tiny_run / "best.pt"), "--out", str(out), "--frames", str(phantom_data)]) == 0
    return out
