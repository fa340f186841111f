"""Choosing the configuration by trial on val: the successive-halving schedule, who advances, the
candidates proposed from a fingerprint (the plain script always among them), and two tiny races
run end to end, one won by a candidate that learns against ones that cannot, one by plain."""

import json
import logging
import math
import time

import pytest
import torch
from test_plan import CPU, phantom_like, usgra_like  # noqa: F401  (module fixtures: two fingerprints)
from test_train import make_mask_folder

from usseg.train import budget_fit, trials
from usseg.train.augment import NNUNET_INTENSITY
from usseg.train.budget import Timing
from usseg.train.candidates import PLAIN, Candidate, propose
from usseg.train.config import resolve_config
from usseg.train.loop import Trainer
from usseg.train.plan import make_plan
from usseg.train.train_cli import main

# -- the schedule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, rounds", [
    (2, [2]),            # two candidates: one round, then the better one
    (3, [3, 2]),         # the better half rounded up, down to two
    (4, [4, 2]),
    (5, [5, 3, 2]),
    (8, [8, 4, 2]),
])
def test_halving_rounds(n, rounds):
    assert trials.halving_rounds(n) == rounds


def test_round_shares_grow_and_fill_the_trial_share():
    assert trials.round_shares(4) == pytest.approx([0.10, 0.15])  # 4 x 10 %, 2 x 15 %, the winner the rest
    for n in range(2, 9):
        shares, rounds = trials.round_shares(n), trials.halving_rounds(n)
        assert sum(k * s for k, s in zip(rounds, shares)) == pytest.approx(trials.TRIAL_SHARE)
        assert all(b == pytest.approx(a * trials.ROUND_GROWTH) for a, b in zip(shares, shares[1:]))


@pytest.mark.parametrize("scores, keep, expected", [
    ([("plain", 0.5), ("a", 0.7), ("b", 0.6), ("c", 0.2)], 2, ["a", "b"]),   # the best two, best first
    ([("plain", 0.6), ("a", 0.6), ("b", 0.6)], 2, ["plain", "a"]),           # ties: the one listed first
    ([("plain", 0.6), ("a", None), ("b", 0.1)], 2, ["plain", "b"]),          # a failed candidate never advances
    ([("plain", math.nan), ("a", 0.01)], 1, ["a"]),                          # no val Dice ranks below any
    ([("plain", None), ("a", None)], 1, []),                                 # all failed: nobody
])
def test_advance(scores, keep, expected):
    assert trials.advance(scores, keep) == expected


# -- the candidates ----------------------------------------------------------------------------------

def test_plain_is_always_a_candidate_and_is_the_plain_script(phantom_like, usgra_like):  # noqa: F811
    for fp in (phantom_like, usgra_like):
        plan = make_plan(fp, CPU)
        candidates = propose(fp, plan, CPU)
        plain = candidates[0]
        assert plain.name == PLAIN and not plain.widths
        cfg, net = plain.config, plain.config.model_config()
        assert (net.arch, net.channels, net.strides, net.num_res_units, net.height, net.width) == \
            ("unet", (16, 32, 64, 128, 256), (2, 2, 2, 2), 2, 256, 256)
        assert (cfg.recipe, cfg.lr, cfg.schedule, cfg.batch_size, cfg.hd_max) == ("none", 1e-3, "none", 8, 0.0)
        aug = cfg.augment_params()
        assert aug.flip == 0.5 and aug.affine == aug.elastic == aug.grid == aug.intensity == aug.noise == 0
        assert candidates[1].name == "plan" and candidates[1].config == plan.config
        assert len({c.name for c in candidates}) == len(candidates) == 4
        assert len({json.dumps(c.config.to_dict(), sort_keys=True) for c in candidates}) == 4  # each one differs
        for c in candidates:                                             # one val split, one seed for all
            assert (c.config.val_fraction, c.config.seed) == (plan.config.val_fraction, plan.config.seed)


def test_candidates_follow_the_fingerprint(phantom_like, usgra_like):  # noqa: F811
    thin = {c.name: c for c in propose(phantom_like, make_plan(phantom_like, CPU), CPU)}
    blobs = {c.name: c for c in propose(usgra_like, make_plan(usgra_like, CPU), CPU)}
    # DynUNet with deep supervision at the plan's input; nnU-Net's intensity set only for the blobs
    for named, plan_cfg in ((thin, thin["plan"].config), (blobs, blobs["plan"].config)):
        net = named["dynunet"].config.model_config()
        assert net.arch == "dynunet" and net.deep_supervision >= 1
        assert (net.height, net.width) == (plan_cfg.model_config().height, plan_cfg.model_config().width)
        assert all(w["arch"] == "dynunet" for w in named["dynunet"].widths)
    assert blobs["dynunet"].config.augment_params().noise == NNUNET_INTENSITY["noise"]
    assert thin["dynunet"].config.augment_params().noise == 0
    # thin lines: the rules' other side (no boundary loss, nnU-Net's intensity set)
    other = thin["no-boundary"].config
    assert thin["plan"].config.hd_max > 0 and other.hd_max == 0 and other.augment_params().lowres > 0
    # blobs: about half the input pixels, its widths re-chosen for it
    small, planned = blobs["small-input"].config.model_config(), blobs["plan"].config.model_config()
    assert 0.4 < small.height * small.width / (planned.height * planned.width) < 0.7
    assert all(w["height"] == small.height for w in blobs["small-input"].widths)


def test_width_is_chosen_for_the_whole_track_and_epochs_for_the_round(tmp_path, monkeypatch):
    def fake_time_steps(model, *args, **kwargs):  # 1 s per 1000 parameters: narrow 1.1 s, wide 12.6 s
        return Timing(step_s=sum(p.numel() for p in model.parameters()) / 1000, val_batch_s=0.1)

    monkeypatch.setattr(budget_fit, "time_steps", fake_time_steps)
    monkeypatch.setattr(budget_fit, "MIN_STEPS", 40)
    data = make_mask_folder(tmp_path / "data", n=10, height=32, width=48, test=2)
    narrow = {"channels": [2, 4, 8], "strides": [2, 2], "num_res_units": 1, "height": 32, "width": 48}
    wide = {**narrow, "channels": [8, 16, 32]}
    trainer = Trainer(resolve_config("tiny", overrides={"model_overrides": narrow}), data, tmp_path / "run",
                      progress=False)
    # a 10 s round: no network gets 40 steps in it, so alone it would take the narrowest...
    budget_fit.fit_network(trainer, 10.0, [narrow, wide])
    assert trainer.cfg.model_overrides == narrow
    # ...but if it won, it would train 10 minutes: the wide one gets 47 steps in them
    reasons, timing = budget_fit.fit_network(trainer, 10.0, [narrow, wide], track_seconds=600.0, validations=4,
                                             early_stop=False)
    assert trainer.cfg.model_overrides == wide and timing.step_s == pytest.approx(12.614)
    assert trainer.cfg.epochs == 1                        # the round itself holds one epoch of 2 steps
    assert trainer.cfg.patience == 0 and "no early stop" in reasons["patience"]
    assert "reaches 40 optimiser steps in the 10.0 min it would train if it won" in reasons["model_overrides"]


# -- races end to end ----------------------------------------------------------------------------------

def tiny(**changes):
    return resolve_config("tiny", overrides={"model_overrides": {"height": 32, "width": 48}, **changes})


LEARNS = {"lr": 1e-2, "schedule": "cosine"}
CANNOT = {"lr": 1e-9}  # the weights barely move: val Dice stays where the random start left it


@pytest.fixture
def small_data(tmp_path):
    return make_mask_folder(tmp_path / "data", n=12, height=32, width=48, test=2)


def race(monkeypatch, candidates, data, run, budget="14s"):
    monkeypatch.setattr(trials, "propose", lambda fp, plan, device: candidates)
    threads = torch.get_num_threads()
    try:
        return main(["--data", str(data), "--out", str(run), "--budget", budget, "--device", "cpu", "--no-progress"])
    finally:
        torch.set_num_threads(threads)  # the race may keep one thread; other tests keep theirs


def test_the_candidate_that_learns_wins_and_a_failing_one_is_dropped(small_data, tmp_path, monkeypatch, caplog):
    candidates = [
        Candidate(PLAIN, tiny(**CANNOT), "cannot learn"),
        Candidate("learns", tiny(**LEARNS), "learns"),
        Candidate("breaks", tiny(val_fraction=0.01), "too small a val fraction: no val frame, an error"),
        Candidate("stuck", tiny(**CANNOT, seed=3), "cannot learn either"),
    ]
    run = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="usseg")
    assert race(monkeypatch, candidates, small_data, run) == 0
    report = json.loads((run / "trials.json").read_text())
    by_name = {c["name"]: c for c in report["candidates"]}
    assert report["winner"] == "learns" and by_name["learns"]["status"] == "won"
    assert report["schedule"] == {"rounds": [4, 2], "shares": [0.1, 0.15], "final_share": 0.3}
    # the failing candidate is reported with its error and dropped; the others go on
    assert by_name["breaks"]["status"] == "failed in round 1" and "val" in by_name["breaks"]["error"]
    assert "trial breaks failed in round 1 and is dropped" in caplog.text
    assert [r["round"] for r in by_name["learns"]["rounds"]] == [1, 2]
    assert len(by_name[PLAIN]["rounds"]) + len(by_name["stuck"]["rounds"]) == 3  # one of them got round 2
    # round 2 goes on from round 1's weights: its epochs follow on
    first, second = by_name["learns"]["rounds"]
    assert second["epochs"][0] == first["epochs"][1] + 1 and first["steps"] > 0 and second["steps"] > 0
    # the margin over plain is measured in the same round, and it is a clear one
    lead = report["margins"]["plain"]
    assert lead["round"] in (1, 2) and lead["delta"] > 0.1
    assert lead["winner_score"] == by_name["learns"]["rounds"][lead["round"] - 1]["best_mean_val_dice"]
    # the winner goes on in RUN from its trial weights: one history, best.pt never below its trials
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = [v["epoch"] for v in metrics["validations"]]
    assert epochs == sorted(epochs) and epochs[0] < second["epochs"][1] < epochs[-1]
    assert metrics["final"]["best_mean_val_dice"] >= second["best_mean_val_dice"]
    assert metrics["final"]["trials"]["winner"] == "learns"
    # every trial's time is in the budget; each trial keeps its run folder
    assert report["trials_seconds"] >= sum(r["seconds"] for c in report["candidates"] for r in c["rounds"])
    assert metrics["final"]["total_seconds"] <= 14 * 1.3
    for name in ("learns", PLAIN, "stuck"):
        assert (run / "trials" / name / "best.pt").is_file()
    # the summary says who won, by how much, at what cost; plan.json and config.json are the winner's
    assert "learns won the trials: +" in caplog.text and "of the 0.2 min budget" in caplog.text
    plan = json.loads((run / "plan.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert plan["reasons"]["trials"].startswith("learns won the trials") and plan["lr"] == config["lr"] == 1e-2


def test_the_plain_candidate_wins_where_it_is_best(small_data, tmp_path, monkeypatch):
    candidates = [
        Candidate(PLAIN, tiny(**LEARNS), "learns"),
        Candidate("stuck", tiny(**CANNOT), "cannot learn"),
        Candidate("stuck-too", tiny(**CANNOT, seed=5), "cannot learn either"),
    ]
    run = tmp_path / "run"
    assert race(monkeypatch, candidates, small_data, run, budget="10s") == 0
    report = json.loads((run / "trials.json").read_text())
    assert report["winner"] == PLAIN and report["schedule"]["rounds"] == [3, 2]
    assert report["margins"]["runner_up"]["delta"] > 0.1 and "plain" not in report["margins"]
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-2


def test_no_epoch_is_started_without_the_time_for_one(small_data, tmp_path):
    run = tmp_path / "run"
    race = trials.Race([Candidate(PLAIN, tiny(**LEARNS), "learns"), Candidate("stuck", tiny(**CANNOT), "stuck")],
                       small_data, run, budget_s=60.0, started=time.monotonic())
    threads = torch.get_num_threads()
    try:
        race.set_up()
        trial = race.trials[0]
        race.run_round(trial, 0, 2.0)
        assert trial.rounds[0]["epochs"][0] == 1 and trial.score is not None
        # a later round of no time: the candidate sits it out, its score stands
        race.run_round(trial, 1, 0.0)
        assert trial.rounds[1]["epochs"] == [] and trial.rounds[1]["best_mean_val_dice"] == trial.score
        # no time left for the winner: its trial weights are the run's, and nothing more is trained
        summary, why, first = trials.go_on(trial, run, time.monotonic(), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary["epochs_this_session"] == 0 and first == trial.rounds[0]["epochs"][1]
    assert "for 0 more epochs" in why["epochs"]
    trial_best = torch.load(run / "trials" / PLAIN / "best.pt", weights_only=True)["model_state_dict"]
    run_best = torch.load(run / "best.pt", weights_only=True)["model_state_dict"]
    assert all(torch.equal(trial_best[k], run_best[k]) for k in trial_best)
    assert json.loads((run / "config.json").read_text())["lr"] == LEARNS["lr"] and (run / "last.pt").is_file()


def test_trials_refuse_many_processes(small_data, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = main(["--data", str(small_data), "--out", str(tmp_path / "run"), "--budget", "1m", "--device", "cpu",
                 "--no-progress"])
    assert code == 2 and "trials on val run in one process" in caplog.text
    assert not (tmp_path / "run" / "trials").exists()
