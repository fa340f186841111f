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
