"""Training: config, loss weights and HD loss, augmentation, data, a tiny run, checkpoints, resume."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usseg.runtime.contract import Contract
from usseg.train import budget_fit, loop
from usseg.train.augment import Augmenter, offline_copies
from usseg.train.checkpoint import load_checkpoint, model_from_checkpoint
from usseg.train.config import PROFILES, TrainConfig, resolve_config
from usseg.train.dataset import SegDataset, load_frames, split_ids
from usseg.train.losses import HausdorffDT, SegLoss, hausdorff_weight, hd_scale, target_fields
from usseg.train.maskfolder import open_mask_folder, write_classes, write_item, write_split
from usseg.train.train_cli import main

SPINE = ("background", "MID", "VTB", "EPI")


def make_mask_folder(root: Path, n: int = 12, height: int = 64, width: int = 80, test: int = 3,
                     seed: int = 0) -> Path:
    """Bright noisy lines and boxes on a dark background; no val split (training carves one)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for k in range(n):
        mask = np.zeros((height, width), np.uint8)
        cx = int(rng.integers(width // 3, 2 * width // 3))
        cv2.line(mask, (cx, 3), (cx + int(rng.integers(-4, 5)), height * 2 // 3), 1, 5)
        cv2.rectangle(mask, (cx - 20, height - 16), (cx + 20, height - 8), 2, -1)
        if k % 4:
            cv2.line(mask, (cx - 14, height // 2), (cx + 14, height // 2), 3, 4)
        image = (40 + 150 * (mask > 0) + rng.normal(0, 20, mask.shape)).clip(0, 255).astype(np.uint8)
        item = f"f{k:02d}"
        write_item(root, item, image, mask)
        splits[item] = "test" if k >= n - test else "train"
    write_classes(root, SPINE)
    write_split(root / "split.csv", splits)
    return root


@pytest.fixture
def folder_dir(tmp_path):
    return make_mask_folder(tmp_path / "data")


def tiny(**changes) -> TrainConfig:
    return resolve_config("tiny", overrides=changes)


# -- loss weights ------------------------------------------------------------------------------

@pytest.mark.parametrize("epoch, epochs, expected", [
    (0, 500, 0.0),      # start of training
    (99, 500, 0.0),     # just before 20 %
    (100, 500, 0.0),    # at 20 %: the ramp starts from 0
    (200, 500, 0.1),    # half-way up the ramp (seed: 0.2 * 100 / 200)
    (300, 500, 0.2),    # 60 %: full weight
    (499, 500, 0.2),    # stays there
    (1, 10, 0.0),       # short run: before epoch 2
    (4, 10, 0.1),       # between 2 and 6
    (8, 10, 0.2),       # after 6
])
def test_hausdorff_weight(epoch, epochs, expected):
    assert hausdorff_weight(epoch, epochs) == pytest.approx(expected)


def test_hausdorff_weight_follows_the_seed_formula():
    for epoch in range(500):
        seed = 0.0 if epoch < 100 else 0.2 * min((epoch - 100) / 200, 1)
        assert hausdorff_weight(epoch, 500) == pytest.approx(seed)


def test_hausdorff_weight_zero_max_is_off():
    assert hausdorff_weight(400, 500, max_weight=0.0) == 0.0


# -- HD loss -----------------------------------------------------------------------------------

def _logits_and_labels(seed=0, b=2, c=4, h=40, w=48):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(b, 1, h, w, dtype=torch.long)
    labels[:, :, 5:30, 10:16] = 1
    labels[:, :, 30:36, 5:40] = 2
    labels[0, :, 18:21, 8:30] = 3  # class 3 only in the first frame
    onehot = torch.nn.functional.one_hot(labels[:, 0], c).permute(0, 3, 1, 2).float()
    logits = (2 * torch.randn(b, c, h, w, generator=gen) + 3 * onehot).requires_grad_()
    return logits, labels


def test_hd_loss_equals_monai_value_and_gradient():
    from monai.losses import HausdorffDTLoss

    logits, labels = _logits_and_labels()
    ref = HausdorffDTLoss(include_background=False, to_onehot_y=True, softmax=True)(logits, labels)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    fields = torch.from_numpy(np.stack([target_fields(x[0].numpy().astype(np.uint8), 4) for x in labels]))
    for given in (None, fields):  # computed in the loss, or precomputed by the loader
        ours = HausdorffDT()(logits, labels, given)
        (grad,) = torch.autograd.grad(ours, logits)
        assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
        assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_hd_term_not_computed_at_zero_weight(monkeypatch):
    logits, labels = _logits_and_labels()
    monkeypatch.setattr(HausdorffDT, "forward", lambda *a: pytest.fail("HD computed at weight 0"))
    loss, parts = SegLoss()(logits, labels, 0.0)
    assert float(loss.detach()) == pytest.approx(parts["dicece"]) and np.isnan(parts["hd"])


def test_blended_loss_mixes_both_terms():
    logits, labels = _logits_and_labels()
    loss, parts = SegLoss(hd_cap=1e9)(logits, labels, 0.25)  # cap out of reach: the plain blend
    assert parts["hd_scale"] == 1.0
    assert float(loss.detach()) == pytest.approx(0.75 * parts["dicece"] + 0.25 * parts["hd"], rel=1e-5)


def test_boundary_term_is_capped_relative_to_dicece():
    logits, labels = _logits_and_labels()
    loss, parts = SegLoss(hd_cap=0.5)(logits, labels, 0.25)
    assert parts["hd"] > 0.5 * parts["dicece"]  # here the raw HD term would dominate...
    # ...so it enters at 0.5 x DiceCE: loss = 0.75 DiceCE + 0.25 x 0.5 DiceCE
    assert float(loss.detach()) == pytest.approx((0.75 + 0.25 * 0.5) * parts["dicece"], rel=1e-5)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dicece, hd, cap, expected", [
    (0.4, 0.1, 0.5, 1.0),     # HD below the cap: unchanged
    (0.4, 4.0, 0.5, 0.05),    # 0.5 x 0.4 / 4.0
    (0.4, 0.0, 0.5, 1.0),     # nothing to scale
    (0.4, float("nan"), 0.5, 0.0),  # a broken HD value is dropped, not propagated
])
def test_hd_scale(dicece, hd, cap, expected):
    assert hd_scale(dicece, hd, cap) == pytest.approx(expected)


# -- configuration -----------------------------------------------------------------------------

def test_config_file_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"c\.json: unknown key\(s\) \['learning_rate'\]; valid keys are .*'lr'"):
        resolve_config("tiny", path)


def test_config_precedence_profile_file_cli(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 7, "lr": 0.01, "schedule": "cosine"}))
    cfg = resolve_config("tiny", path, {"epochs": 2, "batch_size": None})
    assert (cfg.epochs, cfg.lr, cfg.schedule) == (2, 0.01, "cosine")  # CLI wins, file over profile
    assert cfg.batch_size == PROFILES["tiny"].batch_size                 # None = not given


@pytest.mark.parametrize("changes, message", [
    ({"epochs": "5"}, "field 'epochs': expected int"),                   # wrong type
    ({"epochs": 0}, "field 'epochs': 0 must be >= 1"),                   # out of range
    ({"schedule": "step"}, r"field 'schedule'.*\['none', 'cosine', 'poly'\]"),
    ({"model": "huge"}, r"unknown model configuration 'huge'; valid: \["),
    ({"model_overrides": {"depth": 3}}, r"model_overrides': unknown field\(s\) \['depth'\]"),
    ({"recipe": "magic"}, "unknown recipe 'magic'"),
    ({"augment": False, "offline_copies": 2}, "copies need augment"),  # conflicting options
])
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_profiles_are_valid_and_seed_matches_the_seed():
    seed = PROFILES["seed"]
    assert (seed.model_config().height, seed.model_config().width) == (480, 640)
    assert (seed.batch_size, seed.epochs, seed.val_every, seed.lr) == (2, 500, 5, 1e-3)
    assert {"demo", "seed", "tiny"} <= set(PROFILES)


# -- augmentation and data ---------------------------------------------------------------------

def test_augmenter_moves_image_and_mask_together_and_is_keyed():
    mask = np.zeros((64, 80), np.uint8)
    cv2.rectangle(mask, (20, 10), (50, 40), 2, -1)
    image = mask.astype(np.float32) / 2
    aug = Augmenter()
    changed = 0
    for key in range(20):
        out_image, out_mask = aug(image, mask, key)
        again = aug(image, mask, key)
        assert np.array_equal(out_image, again[0]) and np.array_equal(out_mask, again[1])
        assert set(np.unique(out_mask)) <= {0, 2}  # nearest neighbour: no blended labels
        agree = ((out_image > 0.5) == (out_mask == 2)).mean()
        assert agree > 0.97
        changed += not np.array_equal(out_mask, mask)
    assert changed >= 10  # the transforms do fire


def test_offline_copies_keep_originals_first():
    images = np.random.default_rng(0).random((3, 32, 40), dtype=np.float32)
    masks = (images > 0.5).astype(np.uint8)
    out_images, out_masks = offline_copies(images, masks, 2, seed=0)
    assert out_images.shape == (9, 32, 40) and out_masks.shape == (9, 32, 40)
    assert np.array_equal(out_images[:3], images)


def test_val_split_carved_from_train_deterministically(folder_dir):
    folder = open_mask_folder(folder_dir)
    parts = split_ids(folder, 0.2)
    assert parts["val"] and not set(parts["val"]) & set(parts["train"])
    assert set(parts["train"]) | set(parts["val"]) == set(folder.ids("train"))
    assert split_ids(folder, 0.2) == parts


def test_dataset_items_and_target_fields(folder_dir):
    folder = open_mask_folder(folder_dir)
    frames = load_frames(folder, folder.ids("train")[:2], PROFILES["tiny"].recipe_spec(), 64, 80)
    data = SegDataset(frames, 4)
    data.set_epoch(0, fields=True)
    item = data[1]
    assert item["image"].shape == (1, 64, 80) and item["label"].dtype == torch.int64
    assert np.array_equal(item["fields"].numpy(), target_fields(frames.masks[1], 4))


# -- a tiny run --------------------------------------------------------------------------------

def test_tiny_run_learns_and_checkpoint_reloads_identically(folder_dir, tmp_path):
    cfg = tiny(epochs=8, hd_max=0.0, lr=3e-3)
    trainer = loop.Trainer(cfg, folder_dir, tmp_path / "run", progress=False)
    trainer.run()
    losses = [h["train_loss"] for h in trainer.history]
    assert losses[-1] < 0.8 * losses[0]
    for name in ("best.pt", "last.pt", "config.json", "metrics.json"):
        assert (tmp_path / "run" / name).is_file()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "best_val_score",
            "model_config", "contract", "train_config", "val_dice", "history"} <= set(state)
    contract = Contract.from_dict(state["contract"])
    assert contract.classes == SPINE and (contract.input.height, contract.input.width) == (64, 80)
    assert contract.recipe.name == "none" and contract.postprocess.kind == "spine"
    assert set(contract.provenance["val_dice"]) == {"MID", "VTB", "EPI"}
    # no val split in the data set: the checkpoint names the frames the run carved and validated on
    assert state["val_ids"] == trainer.parts["val"] == split_ids(open_mask_folder(folder_dir), cfg.val_fraction)["val"]
    model = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "last.pt"))
    x = torch.rand(2, 1, 64, 80)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model(x))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["validations"]) == 8 and metrics["best"]["mean_val_dice"] == state["best_val_score"]


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_matches_an_uninterrupted_run(folder_dir, tmp_path, monkeypatch, ema):
    cfg = tiny(epochs=4, hd_start=0.25, hd_end=0.5, hd_max=0.2, ema=ema)  # augmentation on, HD from epoch 1
    whole = loop.train(cfg, folder_dir, tmp_path / "whole", progress=False)
    real_epoch, calls = loop.train_epoch, []

    def crash_in_third_epoch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(loop, "train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, folder_dir, tmp_path / "cut", progress=False)
    monkeypatch.setattr(loop, "train_epoch", real_epoch)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = loop.train(cfg, folder_dir, tmp_path / "cut", resume=True, progress=False)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert [h["epoch"] for h in b["history"]] == [0, 1, 2, 3]
    assert [h["train_loss"] for h in b["history"]] == pytest.approx([h["train_loss"] for h in a["history"]])
    for weights in ("model_state_dict", "trained_state_dict") if ema else ("model_state_dict",):
        for key, value in a[weights].items():  # bit for bit: the run is deterministic on CPU
            assert torch.equal(value, b[weights][key]), (weights, key)
    assert b["ema_updates"] == (a["ema_updates"] if ema else 0)
    assert resumed["best_mean_val_dice"] == pytest.approx(whole["best_mean_val_dice"])


def test_cli_resume_continues_the_epoch_count(folder_dir, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(folder_dir), "--out", str(run), "--profile", "tiny", "--no-progress"]
    assert main(args + ["--epochs", "2"]) == 0
    assert main(args + ["--epochs", "2"]) == 2  # an existing run is not overwritten silently
    assert main(["--data", str(folder_dir), "--out", str(run), "--resume", "--epochs", "3", "--no-progress"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


def test_cli_config_file_and_override(folder_dir, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 5, "batch_size": 3, "hd_max": 0.0}))
    run = tmp_path / "run"
    assert main(["--data", str(folder_dir), "--out", str(run), "--profile", "tiny", "--config", str(path),
                 "--epochs", "1", "--no-progress"]) == 0
    used = json.loads((run / "config.json").read_text())
    assert (used["epochs"], used["batch_size"], used["hd_max"], used["model"]) == (1, 3, 0.0, "tiny")
    path.write_text(json.dumps({"epochs": 5, "bogus": 1}))
    assert main(["--data", str(folder_dir), "--out", str(tmp_path / "r2"), "--config", str(path)]) == 2


@pytest.mark.parametrize("scores, stale", [
    ([], 0),                       # no validation yet
    ([0.5, 0.6, 0.7], 0),          # still improving
    ([0.5, 0.7, 0.6, 0.7], 2),     # a tie is no improvement
    ([None, 0.1], 0),              # an all-absent (None) score never counts as best
])
def test_stale_validations(scores, stale):
    history = [{"epoch": i, "val_dice": {}, "mean_val_dice": s} for i, s in enumerate(scores)]
    assert loop.stale_validations(history) == stale


def test_early_stop_after_patience(folder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", lambda *a: (1.0, np.array([0.5, 0.5, 0.5])))
    summary = loop.train(tiny(epochs=6, patience=2), folder_dir, tmp_path / "run", progress=False)
    assert summary["stopped_early"] and summary["last_epoch"] == 2 and summary["best_epoch"] == 0


def test_no_early_stop_before_patience_start(folder_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", lambda *a: (1.0, np.array([0.5, 0.5, 0.5])))
    early = loop.train(tiny(epochs=6, patience=1), folder_dir, tmp_path / "a", progress=False)
    late = loop.train(tiny(epochs=6, patience=1, patience_start=0.5), folder_dir, tmp_path / "b", progress=False)
    assert early["last_epoch"] == 1 and late["last_epoch"] == 2  # not before epoch 3 of 6


def test_resume_of_a_run_from_before_new_fields(folder_dir, tmp_path):
    run = tmp_path / "run"
    loop.train(tiny(epochs=1), folder_dir, run, progress=False)
    state = load_checkpoint(run / "last.pt")
    for key in ("augmentation", "hd_cap", "hd_guard", "patience_start"):  # fields an older usseg did not write
        del state["train_config"][key]
    torch.save(state, run / "last.pt")
    summary = loop.train(tiny(epochs=2), folder_dir, run, resume=True, progress=False)
    assert summary["last_epoch"] == 1


def test_offline_copies_replace_online_augmentation(folder_dir, tmp_path):
    trainer = loop.Trainer(tiny(offline_copies=2), folder_dir, tmp_path / "run", progress=False)
    assert len(trainer.train_set) == 3 * len(trainer.parts["train"])
    assert trainer.train_set.augmenter is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback(folder_dir, tmp_path, caplog):
    assert main(["--data", str(folder_dir), "--out", str(tmp_path / "run"), "--profile", "tiny",
                 "--device", "cuda", "--no-progress"]) == 2
    assert "sees no CUDA device" in caplog.text


# -- configs, checkpoints ------------------------------------------------------------------------

def test_config_files_load_and_do_not_copy_the_profiles():
    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
    assert files, "configs/ holds the configurations that are not profiles"
    for path in files:
        assert path.stem not in PROFILES, f"{path.name} duplicates the built-in profile {path.stem!r}"
        resolve_config("demo", path)  # raises on an unknown key or a bad value


class Payload:
    """Any object that is not a tensor or a plain value: weights_only=True refuses to unpickle it."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model_state_dict": {}, "model_config": {}, "contract": {}, "x": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: not a readable usseg checkpoint"):
        load_checkpoint(path)


# -- boundary-loss guard -------------------------------------------------------------------------

def test_boundary_loss_switched_off_when_val_dice_falls(folder_dir, tmp_path, monkeypatch, caplog):
    scores = iter([0.6, 0.7, 0.5, 0.55, 0.6, 0.65])  # the HD term comes in at epoch 3 (index 2)
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (1.0, np.full(3, next(scores))))
    cfg = tiny(epochs=6, hd_max=0.2, hd_start=0.3, hd_end=0.6, hd_guard=0.05)
    trainer = loop.Trainer(cfg, folder_dir, tmp_path / "run", progress=False)
    best_weights = {}
    real_record = trainer.record

    def record(entry, writer):
        real_record(entry, writer)
        if entry["epoch"] == 1:  # best.pt now holds epoch 2 (mean 0.7)
            best_weights.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    monkeypatch.setattr(trainer, "record", record)
    trainer.run()
    weights = [h["hd_weight"] for h in trainer.history]
    assert weights[0] == weights[1] == 0 and weights[2] > 0      # ramp started at epoch 3...
    assert weights[3:] == [0, 0, 0] and trainer.hd_off == 2       # ...and was switched off after it
    assert trainer.history[2]["hd_switched_off"] is True
    assert "boundary loss switched off after epoch 3: mean val Dice fell to 0.5000 from 0.7000" in caplog.text
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["hd_switched_off"] == 2
    assert state["best_val_score"] == pytest.approx(0.7)
    assert best_weights  # the rollback restored best.pt's weights before epoch 4 trained
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    for key, value in best["model_state_dict"].items():
        assert torch.equal(value, best_weights[key]), key


def test_boundary_loss_kept_within_the_guard(folder_dir, tmp_path, monkeypatch):
    scores = iter([0.6, 0.7, 0.68, 0.72])  # a dip of 0.02 < hd_guard
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (1.0, np.full(3, next(scores))))
    trainer = loop.Trainer(tiny(epochs=4, hd_max=0.2, hd_start=0.5, hd_end=0.75), folder_dir, tmp_path / "run",
                           progress=False)
    trainer.run()
    assert trainer.hd_off is None and trainer.history[-1]["hd_weight"] > 0


# -- time budget ----------------------------------------------------------------------------------

def test_budget_picks_the_network_and_sizes_the_epochs(folder_dir, tmp_path, monkeypatch):
    from usseg.train.budget import Timing, size_run

    def fake_time_steps(model, *args, **kwargs):  # wider networks are slower: 1 s per 1000 parameters
        return Timing(step_s=sum(p.numel() for p in model.parameters()) / 1000, val_batch_s=0.5)

    monkeypatch.setattr(budget_fit, "time_steps", fake_time_steps)
    monkeypatch.setattr(budget_fit, "MIN_STEPS", 20)
    narrow = {"channels": [2, 4, 8], "strides": [2, 2], "num_res_units": 1}   # ~0.5 k parameters
    wide = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}   # ~10 k parameters
    fitted, threads = {}, torch.get_num_threads()
    try:
        summary = loop.train(tiny(), folder_dir, tmp_path / "run", progress=False, budget_s=60.0,
                             candidates=[narrow, wide], on_fit=lambda cfg, why: fitted.update(cfg=cfg, why=why))
    finally:
        torch.set_num_threads(threads)  # the budget may keep one thread; other tests keep theirs
    cfg = fitted["cfg"]
    assert cfg.model_overrides == narrow                                     # wide: < 20 steps in 58 s
    timing = fake_time_steps(loop.build_model(cfg.model_config(), 4))
    # 8 train frames in batches of 4: 2 steps per epoch; 1 val batch; 3 % of the budget kept back,
    # and whatever loading the data took (seconds; more on a busy machine) is not available either
    assert size_run(0.97 * 60 - 30, timing, 2, 1).epochs <= cfg.epochs <= size_run(0.97 * 60, timing, 2, 1).epochs
    assert {"model_overrides", "epochs", "val_every", "patience"} <= set(fitted["why"])
    assert summary["budget"]["fitted_epochs"] == cfg.epochs
    # the real steps are far faster than the fake timing said: the run may grow by half, early on
    assert summary["last_epoch"] + 1 <= summary["budget"]["epochs"] <= 1.5 * cfg.epochs
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_overrides"] == narrow


def test_slow_machine_shortens_the_run(folder_dir, tmp_path, caplog):
    from usseg.train.budget import Clock

    trainer = loop.Trainer(tiny(epochs=10), folder_dir, tmp_path / "run", progress=False)
    trainer.clock = Clock(deadline=350.0, now=lambda: 100.0 * (trainer.epoch + 1))  # 100 s per epoch
    summary = trainer.run()
    assert trainer.cfg.epochs == 3 and summary["last_epoch"] == 2           # 350 s: three epochs
    assert "val_dice" in trainer.history[-1]                                  # the last one validated
    assert "3 epochs instead of 10" in caplog.text
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 3


def test_epochs_come_back_when_the_machine_speeds_up(folder_dir, tmp_path):
    from usseg.train.budget import Clock

    trainer = loop.Trainer(tiny(epochs=10), folder_dir, tmp_path / "run", progress=False)
    # the first epoch takes 100 s, the others 10 s each
    trainer.clock = Clock(350.0, now=lambda: 0.0 if trainer.epoch < 0 else 100.0 + 10 * trainer.epoch, max_epochs=10)
    summary = trainer.run()
    resized = [h["resized"] for h in trainer.history if "resized" in h]
    assert resized[0] == 3 and resized[-1] == 10 and resized == sorted(resized)  # 3, then given back up to 10
    assert trainer.cfg.epochs == 10 and summary["last_epoch"] == 9


def test_a_faster_machine_adds_epochs_early_in_the_run_only(folder_dir, tmp_path):
    from usseg.train.budget import Clock

    trainer = loop.Trainer(tiny(epochs=10), folder_dir, tmp_path / "run", progress=False)
    trainer.clock = Clock(350.0, now=lambda: 10.0 * (trainer.epoch + 1), max_epochs=10)  # 10 s per epoch
    summary = trainer.run()
    assert trainer.cfg.epochs == 15 and summary["last_epoch"] == 14  # 1.5 x the fitted 10, not the 35 that fit


# -- the run folder ---------------------------------------------------------------------------------

def test_stale_temporaries_are_removed_at_start(folder_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".best.pt.k2j3.tmp.pt", run / ".last.pt.x8f1.usseg-tmp.pt"]
    for path in stale:
        path.write_bytes(b"")
    keep = run / "notes.tmp.pt"  # not a hidden temporary: the user's
    keep.write_bytes(b"x")
    loop.train(tiny(epochs=1), folder_dir, run, progress=False)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_ctrl_c_says_where_to_resume_in_one_line(folder_dir, tmp_path, monkeypatch, caplog, capsys):
    real_epoch, calls = loop.train_epoch, []

    def interrupt_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(loop, "train_epoch", interrupt_second_epoch)
    run = tmp_path / "run"
    code = main(["--data", str(folder_dir), "--out", str(run), "--profile", "tiny", "--epochs", "3", "--no-progress"])
    assert code == 130
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    hint = f"interrupted; {run / 'last.pt'} holds epoch 1: resume with  usseg train --data {folder_dir} --out {run} --resume"
    assert errors == [hint]
    assert "Traceback" not in capsys.readouterr().err


def test_train_without_a_profile_plans_from_the_data(folder_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["--data", str(folder_dir), "--out", str(run), "--epochs", "1", "--no-progress"]) == 0
    plan = json.loads((run / "plan.json").read_text())
    used = json.loads((run / "config.json").read_text())
    assert used["hd_max"] == 0.2 and "thinnest structures are" in plan["reasons"]["hd_max"]  # 5-px lines
    assert used["model_overrides"]["height"] == 64 and used["model_overrides"]["width"] == 80  # small frames: full size
    assert used["epochs"] == 1 and used["recipe"] == "realtime"
    assert json.loads((run / "fingerprint.json").read_text())["frames"] == {"train": 9, "val": 0, "test": 3}
