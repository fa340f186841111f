"""usseg export --ensemble: the folds of a --folds run as one graph averaging their probabilities."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from usseg.export.cli import main as export_main
from usseg.runtime import Segmenter
from usseg.runtime.cleanup import apply_steps, cleanup_plan
from usseg.runtime.contract import Contract, InputSpec, PostprocessSpec
from usseg.runtime.preprocess import get_recipe, preprocess
from usseg.train.checkpoint import save_checkpoint
from usseg.train.model import build_model, get_model_config

CLASSES = ("background", "nerve", "vessel")


def fold_run(run, largest_components, height=64):
    """RUN/folds.json and RUN/fold_k/best.pt: tiny untrained models, one seed each."""
    cfg = get_model_config("tiny")
    models = []
    for k, largest in enumerate(largest_components):
        torch.manual_seed(k)
        model = build_model(cfg, len(CLASSES)).eval()
        contract = Contract(classes=CLASSES, input=InputSpec(height=height, width=cfg.width),
                            recipe=get_recipe("none"), postprocess=PostprocessSpec(kind="none",
                                                                                   largest_component=largest))
        save_checkpoint(run / f"fold_{k}" / "best.pt", {"epoch": 0, "model_state_dict": model.state_dict(),
                                                        "model_config": cfg.to_dict(), "contract": contract.to_dict()})
        models.append(model)
    (run / "folds.json").write_text(json.dumps({"folds": len(largest_components), "runs": []}))
    return models


def mean_probs(models, x):
    with torch.no_grad():
        return torch.stack([torch.softmax(m(x), 1) for m in models]).mean(0).numpy()


def test_ensemble_graph_averages_the_folds_probabilities(tmp_path, capsys):
    models = fold_run(tmp_path / "cv", [["nerve", "vessel"], ["nerve"]])
    out = tmp_path / "models" / "cv.onnx"
    assert export_main(["--model", str(tmp_path / "cv"), "--ensemble", "--out", str(out), "--output", "probs"]) == 0
    printed = capsys.readouterr().out
    assert "ensemble    2 folds, probabilities averaged:" in printed and "ms per frame on this CPU" in printed

    x = torch.rand(1, 1, 64, 80)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    expected = mean_probs(models, x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(expected, mean_probs(models[:1], x), atol=1e-3)  # the second fold counts

    seg = Segmenter(out)  # the runtime loads it; labels: argmax of the average, then the shared clean-up
    assert seg.contract.postprocess.largest_component == ("nerve",)  # what every fold chose
    assert seg.contract.provenance["ensemble_folds"] == 2
    frame = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    prepared, _ = preprocess(frame, seg.contract.recipe, 64, 80)
    labels = mean_probs(models, torch.from_numpy(prepared)[None, None])[0].argmax(0).astype(np.uint8)
    np.testing.assert_array_equal(seg(frame).labels, apply_steps(labels, cleanup_plan(CLASSES, ["nerve"], [])))


@pytest.mark.parametrize("folds, message", [
    ("five", "key 'folds' must be an integer from 2 to 100, got five"),
    (1, "key 'folds' must be an integer from 2 to 100, got 1"),
    (3, "fold_2/best.pt not found"),
])
def test_ensemble_refuses_a_bad_fold_run(tmp_path, capsys, folds, message):
    fold_run(tmp_path / "cv", [[], []])
    (tmp_path / "cv" / "folds.json").write_text(json.dumps({"folds": folds}))
    assert export_main(["--model", str(tmp_path / "cv"), "--ensemble", "--out", str(tmp_path / "m.onnx")]) == 2
    assert message in capsys.readouterr().err


def test_ensemble_refuses_folds_of_different_input(tmp_path, capsys):
    fold_run(tmp_path / "cv", [[], []])
    fold_run(tmp_path / "other", [[]], height=32)
    (tmp_path / "other" / "fold_0" / "best.pt").replace(tmp_path / "cv" / "fold_1" / "best.pt")
    assert export_main(["--model", str(tmp_path / "cv"), "--ensemble", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "fold_1/best.pt: its contract's 'input' differs from fold 0's" in capsys.readouterr().err
