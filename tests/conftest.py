import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
USGRA = DATA / "usgra-seg"  # four real frames with their masks (CC BY 4.0, see its README.md)
TRAINED_LABEL_MAPS = DATA / "trained-label-maps" / "labels.npz"  # a trained network's maps (its README.md)


# -- the suite reads nothing beside the repository ------------------------------------------------
class OutsideRepositoryRead(RuntimeError):
    """A test opened or listed a path beside the repository (a data set that a clone lacks)."""


_BESIDE = str(ROOT.parent) + os.sep


def _allowed_roots() -> tuple[str, ...]:
    """Where a test may read beside the repository: the repository itself, the interpreter and its
    packages (a virtual environment next to the clone), the temporary folder and the user's caches
    (Numba's, usseg's). Only a data set or another project beside the clone is refused."""
    roots = [ROOT, sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir(), *sys.path,
             os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"]
    roots += [os.environ[name] for name in ("NUMBA_CACHE_DIR", "USSEG_CACHE_DIR") if os.environ.get(name)]
    roots = [os.path.abspath(os.fspath(r)) + os.sep for r in roots if r]
    # A root that holds the repository's parent (the temporary folder, when the clone itself lives
    # in one) would allow every sibling: only the roots beside or inside the repository count.
    return tuple(r for r in roots if not _BESIDE.startswith(r))


_INSIDE = _allowed_roots()
_outside_reads: list[str] = []


def _audit(event: str, args: tuple) -> None:
    """Refuse, and remember, an open or a listing of a path under the repository's parent that is
    not inside the repository: such a test passes only on a machine that has the sibling folder."""
    if event not in ("open", "os.listdir", "os.scandir") or not args or not isinstance(args[0], (str, bytes, Path)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path.startswith(_BESIDE) and not (path + os.sep).startswith(_INSIDE):
        _outside_reads.append(path)
        raise OutsideRepositoryRead(f"{path}: tests read nothing outside the repository {ROOT}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_stay_inside_the_repository():
    """Fails the test that touched a path beside the repository, even if it caught the error."""
    _outside_reads.clear()
    yield
    if _outside_reads:
        pytest.fail(f"read outside the repository: {sorted(set(_outside_reads))[:3]}")


# -- a seed-format sample, like the seed's own sample frame ---------------------------------------
@dataclass(frozen=True)
class SeedSample:
    annotations: Path
    images: Path
    key: str
    entries: list  # the key's [label, shape, points] list
    size: tuple[int, int]  # (height, width)


@pytest.fixture(scope="session")
def seed_sample(tmp_path_factory) -> SeedSample:
    """One phantom frame in the seed's sample layout: 625x443 (the seed's sample size, not 480x640),
    8-bit RGBA with R=G=B and alpha 255, with MID, VTB and EPI annotated."""
    from usseg.train.phantom import PhantomConfig, generate_frame

    height, width, key = 443, 625, "phantom_sample"
    grey, entries = generate_frame(PhantomConfig(height=height, width=width), seed=97, index=0)
    assert sorted(label for label, _, _ in entries) == ["EPI", "MID", "VTB"]
    root = tmp_path_factory.mktemp("seed_sample")
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / f"{key}.png"), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    (root / "annotations.json").write_text(json.dumps({key: entries}))
    return SeedSample(root / "annotations.json", root / "images", key, entries, (height, width))


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
