"""The weight average (train/ema.py): against a plain reference, and what a run saves with it."""

import json

import pytest
import torch

from usseg.train import loop
from usseg.train.config import TrainConfig, resolve_config
from usseg.train.ema import WeightAverage, warmup_decay


def test_warmup_decay_ramps_up_to_the_decay():
    assert warmup_decay(0.99, 0) == pytest.approx(0.1)
    assert warmup_decay(0.99, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.99, 10_000) == 0.99


def test_average_matches_a_plain_loop_and_keeps_batch_norm_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    average = WeightAverage(model, decay=0.8)
    expected = {k: v.clone().float() for k, v in model.state_dict().items()}
    for n in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 1, 8, 8))  # moves the running statistics
        average.update(model)
        d = 0.0 if n == 0 else warmup_decay(0.8, n - 1)  # the first update copies
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v
    assert average.updates == 6
    state = average.module.state_dict()
    for k, v in expected.items():
        if model.state_dict()[k].is_floating_point():
            assert torch.allclose(state[k], v, atol=1e-6), k
            assert not torch.equal(state[k], model.state_dict()[k]), k  # an average, not a copy
    assert int(state["1.num_batches_tracked"]) == 6


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(2, 2), decay)
    if decay != 0.0:  # 0 is the config's "off"
        with pytest.raises(ValueError, match="'ema'"):
            TrainConfig(ema=decay)


def test_run_validates_and_saves_the_average(phantom_data, tmp_path):
    data = phantom_data
    cfg = resolve_config("tiny", overrides={"epochs": 3, "ema": 0.9})
    summary = loop.train(cfg, data, tmp_path / "run", progress=False)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    steps = sum(-(-summary["frames"]["train"] // cfg.batch_size) for _ in range(3))
    assert last["ema_updates"] == steps
    trained, averaged = last["trained_state_dict"], last["model_state_dict"]
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained if trained[k].is_floating_point())
    # the validated model is the average: scoring it again gives the logged figure
    trainer = loop.Trainer(cfg, data, tmp_path / "again", progress=False)
    trainer.model.load_state_dict(averaged)
    _, dice = loop.validate(trainer.model, loop.make_val_loader(trainer.val_set, cfg.batch_size, 0, 1),
                            trainer.loss_fn, 0.0, len(trainer.classes), trainer.device, False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert float(loop.mean_dice(dice)) == pytest.approx(metrics["validations"][-1]["mean_val_dice"], abs=1e-6)
