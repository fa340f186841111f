"""DynUNet (nnU-Net's network) beside the UNet: deep-supervision outputs and loss, configuration
checks, a few epochs that checkpoint and resume, and an export to one ONNX graph with one output."""

import json

import onnx
import pytest
import torch
from monai.losses import DiceCELoss
from test_train import make_mask_folder

from usseg.export.cli import main as export_main
from usseg.train import loop
from usseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from usseg.train.config import resolve_config
from usseg.train.losses import SegLoss, deep_supervision_weights
from usseg.train.model import ModelConfig, build_model, get_model_config

DYN = {"channels": [4, 8, 16], "strides": [2, 2], "deep_supervision": 1, "height": 32, "width": 48}


def dyn(**changes):
    return resolve_config("tiny", overrides={"model": "dynunet", "model_overrides": DYN, **changes})


def test_deep_supervision_heads_in_training_one_output_in_evaluation():
    model = build_model(dyn().model_config(), 4)
    x = torch.rand(2, 1, 32, 48)
    assert model.train()(x).shape == (2, 2, 4, 32, 48)  # main output and one deeper head, at input size
    assert model.eval()(x).shape == (2, 4, 32, 48)
    assert build_model(ModelConfig.from_dict({**DYN, "arch": "dynunet", "deep_supervision": 0}), 4).train()(x).shape \
        == (2, 4, 32, 48)


@pytest.mark.parametrize("heads, weights", [
    (1, [1.0]),                      # no deep supervision: the main output alone
    (2, [2 / 3, 1 / 3]),             # nnU-Net: 1, 1/2, normalised
    (3, [4 / 7, 2 / 7, 1 / 7]),      # 1, 1/2, 1/4
])
def test_deep_supervision_weights_follow_nnunet(heads, weights):
    assert deep_supervision_weights(heads) == pytest.approx(weights)


def test_loss_on_deep_supervision_heads_is_their_weighted_dicece():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 16, 24, generator=gen)
    labels = torch.randint(0, 4, (2, 1, 16, 24), generator=gen)
    ref = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, lambda_dice=0.5, lambda_ce=0.5)
    expected = sum(w * float(ref(logits[:, i], labels)) for i, w in enumerate([4 / 7, 2 / 7, 1 / 7]))
    loss, parts = SegLoss()(logits, labels, 0.0)
    assert float(loss) == pytest.approx(expected, rel=1e-6) and parts["dicece"] == pytest.approx(expected, rel=1e-6)
    # the boundary term is taken on the main output only
    _, with_hd = SegLoss(hd_cap=1e9)(logits, labels, 0.5)
    _, main_only = SegLoss(hd_cap=1e9)(logits[:, 0], labels, 0.5)
    assert with_hd["hd"] == pytest.approx(main_only["hd"])


@pytest.mark.parametrize("changes, message", [
    ({"arch": "unet", "deep_supervision": 1}, "only the 'dynunet' arch"),    # a UNet has no heads
    ({"deep_supervision": 2}, r"must be in \[0, 1\]"),                       # two levels: one head at most
    ({"arch": "vnet"}, "valid: \\['unet', 'dynunet'\\]"),                     # unknown network
])
def test_model_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({**get_model_config("dynunet").to_dict(), **DYN, **changes})


def test_dynunet_trains_checkpoints_resumes_and_exports_one_output(tmp_path):
    data = make_mask_folder(tmp_path / "data", n=10, height=32, width=48, test=2)
    run = tmp_path / "run"
    loop.train(dyn(epochs=2, lr=3e-3), data, run, progress=False)
    summary = loop.train(dyn(epochs=3, lr=3e-3), data, run, resume=True, progress=False)
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert summary["epochs_this_session"] == 1
    assert state["model_config"]["arch"] == "dynunet" and state["model_config"]["deep_supervision"] == 1
    assert any(k.startswith("deep_supervision_heads") for k in state["model_state_dict"])
    model = model_from_checkpoint(state)
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        assert model(x).shape == (1, 4, 32, 48)

    onnx_path = tmp_path / "dyn.onnx"
    assert export_main(["--model", str(run / "best.pt"), "--out", str(onnx_path), "--frames", str(data)]) == 0
    graph = onnx.load(str(onnx_path)).graph
    assert len(graph.output) == 1  # the main head only: the deep-supervision heads are training's
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, 32, 48]
    assert json.loads((run / "config.json").read_text())["model"] == "dynunet"
