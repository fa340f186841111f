"""The benchmark chains and plans, without training: each step changes one thing and says which."""

from pathlib import Path

import pytest

from usseg.benchmarks.plan import Plan
from usseg.benchmarks.weights import ModelEntry, chain, weights_line


def _facts(m):
    cfg = m.config.model_config()
    return {"network": cfg.name, "input size": (cfg.height, cfg.width), "recipe": m.config.recipe}


@pytest.mark.parametrize("quick", [False, True])
def test_each_model_of_a_chain_changes_exactly_one_thing_and_names_it(quick):
    models = chain(quick)
    assert models[0].config.recipe == "seed" and not models[0].changes   # the seed-style pair's model
    assert len({m.name for m in models}) == len(models)
    for before, after in zip(models, models[1:]):
        a, b = _facts(before), _facts(after)
        changed = [k for k in a if a[k] != b[k]]
        assert len(changed) == 1, (before.name, after.name, changed)
        assert after.changes.startswith(changed[0].split()[0])              # "network: ...", "input size: ..."
        assert after.data == before.data                                      # same training data throughout


def test_keys_follow_the_training_configuration():
    full, quick = chain(False), chain(True)
    assert len({m.key() for m in full + quick}) == len(full + quick)
    assert chain(False)[0].key() == full[0].key()                             # stable across calls


def test_plan_round_trips_through_json(tmp_path):
    entry = ModelEntry("m", "lite UNet", 240, 320, "seed", tmp_path / "m", {"trained": True}, tmp_path / "m.pt",
                       calibration=tmp_path / "data", changes="recipe: seed -> realtime")
    plan = Plan(quick=True, device="cpu", models=[entry], frames={"count": 4, "height": 240, "width": 320, "seed": 1},
                rounds=30, warmup=2, stream_frames=120)
    plan.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json")
    assert back.to_dict() == plan.to_dict()
    assert back.models[0].checkpoint == tmp_path / "m.pt" and back.models[0].onnx is None


def test_a_given_onnx_model_can_only_be_timed_as_it_is(tmp_path):
    entry = ModelEntry("given", "lite UNet", 240, 320, "seed", tmp_path, {"trained": "given"}, onnx=Path("x.onnx"))
    assert entry.can_export() and not entry.can_export("int8") and not entry.can_export("fp32", "dynamic")
    assert entry.export() == Path("x.onnx")
    with pytest.raises(ValueError, match="only the given model file"):
        entry.export("fp16")
    with pytest.raises(ValueError, match="no seed-style rows"):
        entry.torch_model()


@pytest.mark.parametrize("weights, text", [
    ({"trained": True, "data": "phantom, 70 frames", "split": {"train": 49, "val": 7, "test": 14}, "epochs": 20,
      "best_epoch": 17, "mean_test_dice": 0.71, "test_dice": {"MID": 0.6, "VTB": None}},
     "trained on phantom, 70 frames (train/val/test 49/7/14), 20 epochs (best 18), test Dice 0.710 (MID 0.60)"),
    ({"trained": "given", "source": "a.pt", "epoch": 9, "mean_val_dice": None},
     "given: a.pt, epoch 9, val Dice - (test Dice not measured here)"),
    ({"trained": False, "note": "random init"}, "untrained (random init)"),
])
def test_weights_line(weights, text):
    assert weights_line(weights) == text
