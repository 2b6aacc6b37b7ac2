"""--time-budget: the epoch arithmetic, a run stopped by its budget, a calibration that changes nothing the run
uses, and the option's errors."""
import dataclasses
import json
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import common.training.time_budget as time_budget
from conftest import REPO
from common.training.time_budget import TIMED_STEPS, WARMUP_STEPS, epochs_for_budget, steps_per_epoch
from helpers.events import scalar_values
from pretrain.run import calibrate
from pretrain.simclr import train as simclr_train
from pretrain.simclr.module import SimCLR
from utils import models_dir

TINY = ["--dataset", "breastmnist", "--accelerator", "cpu", "--backbone", "small_cnn", "--batch-size", "16"]


def test_epochs_fill_the_budget_with_their_validations_and_overheads():
    # 10 steps of 0.1 s + 0.5 s overhead = 1.5 s an epoch, a 2 s validation after every 2nd: 5 s per 2 epochs
    assert epochs_for_budget(50.0, 0.1, 10, 2.0, 2, 0.5) == 20  # 20 * 1.5 + 10 * 2 = 50
    assert epochs_for_budget(49.9, 0.1, 10, 2.0, 2, 0.5) == 19  # 19 * 1.5 + 9 * 2 = 46.5; 20 costs 50
    assert epochs_for_budget(48.0, 0.1, 10, 2.0, 2, 0.5) == 19  # the 19th epoch owes no validation yet
    assert epochs_for_budget(1.0, 0.1, 10, 2.0, 2, 0.5) == 1  # at least one
    assert epochs_for_budget(-5.0, 0.1, 10, 2.0, 2, 0.5) == 1
    assert epochs_for_budget(3600.0, 0.01, 100, 0.0, 1, 0.0) == 3600  # no overheads: budget / epoch time
    for budget in np.linspace(0.5, 100, 57):  # the largest that fits, against counting up
        fits = [e for e in range(1, 200) if e * 1.5 + (e // 3) * 2.0 <= budget]
        assert epochs_for_budget(float(budget), 0.1, 10, 2.0, 3, 0.5) == max(fits, default=1)
    assert steps_per_epoch(48, 16) == 3 and steps_per_epoch(50, 16) == 3  # drop_last
    assert steps_per_epoch(48, 16, world_size=4) == 1  # 12 images each: one batch of 12


def test_calibration_leaves_the_model_and_every_random_state_as_they_were(data_dir, tmp_path):
    from common.data.datamodule import MedMNISTDataModule

    data = MedMNISTDataModule("breastmnist", data_dir=data_dir, batch_size=16, drop_last=True).load()
    torch.manual_seed(0)
    model = SimCLR(backbone="small_cnn", in_channels=1, dataset="breastmnist", batch_size=16, num_train=48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    calibration = calibrate(model, data, "cpu", "32-true", tmp_path / "models", started=0.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch norm statistics too
    assert model.generators == {} and model.hparams.lr is None  # its generators made at the fit, its lr there
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert calibration.seconds_per_step > 0 and calibration.validation_s > 0 and calibration.checkpoint_s > 0
    assert list((tmp_path / "models").iterdir()) == []  # the timed checkpoint is gone


def test_a_run_stops_at_its_budget_and_records_it(data_dir, output_root, monkeypatch):
    """Planned for 10x the budget, the clock stops it: within a step or two of 6 s, its last checkpoint saved, the
    schedule over the planned epochs."""
    monkeypatch.setattr(time_budget, "PLAN_SHARE", 10.0)
    final = simclr_train.main([*TINY, "--data-dir", str(data_dir), "--time-budget", "0.1", "--name", "budget"])
    record = json.loads(final.with_suffix(".config.json").read_text())
    spent = record["time_budget"]
    assert record["options"]["time_budget"] == 0.1 and record["options"]["epochs"] is None  # a rerun plans anew
    assert spent["stopped_by_budget"] and spent["steps_run"] < spent["planned_epochs"] * spent["steps_per_epoch"]
    # within two steps of its budget, and Lightning's end-of-step bookkeeping (a few ms here; more under load)
    assert spent["wall_s"] <= 6.0 + 2 * spent["seconds_per_step"] + 0.25
    assert spent["wall_s"] >= 6.0 - spent["validation_s"] - 3 * spent["checkpoint_s"] - 1.0  # used, not wasted
    last = torch.load(models_dir("simclr") / "tb_logs" / "budget" / "version_0" / "checkpoints" / "last.ckpt",
                      map_location="cpu", weights_only=True)
    assert last["global_step"] == spent["steps_run"]  # saved where the clock stopped it
    assert last["hyper_parameters"]["max_epochs"] == spent["planned_epochs"]
    assert last["lr_schedulers"][0]["T_max"] == spent["planned_epochs"]  # the cosine schedule over the plan


def test_a_calibration_that_overestimates_its_steps_is_corrected_by_the_epochs_it_times(data_dir, output_root,
                                                                                         monkeypatch):
    """Told each step takes 1 s (several times what it takes here, even on a busy machine), the run plans a few epochs, then plans again
    from its first epochs' time: it fills its budget instead of ending early, the schedule's length moved to the
    new plan, the learning rate going on down from where it was."""
    import pretrain.run

    real = pretrain.run.calibrate

    def slow_calibration(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), seconds_per_step=1.0)

    monkeypatch.setattr(pretrain.run, "calibrate", slow_calibration)
    final = simclr_train.main([*TINY, "--data-dir", str(data_dir), "--time-budget", "0.2", "--name", "replanned"])
    spent = json.loads(final.with_suffix(".config.json").read_text())["time_budget"]
    assert spent["first_planned_epochs"] >= 2 and spent["replans"] >= 1 and spent["time_scale"] < 1.0
    assert spent["planned_epochs"] > spent["first_planned_epochs"]
    assert spent["wall_s"] >= 0.6 * 12.0  # the first plan alone ends within a second or two
    last = torch.load(models_dir("simclr") / "tb_logs" / "replanned" / "version_0" / "checkpoints" / "last.ckpt",
                      map_location="cpu", weights_only=True)
    assert last["hyper_parameters"]["max_epochs"] == last["lr_schedulers"][0]["T_max"] == spent["planned_epochs"]
    rates = scalar_values(models_dir("simclr") / "tb_logs" / "replanned", "train/lr")
    assert len(rates) >= spent["first_planned_epochs"] + 1
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(rates, rates[1:]))  # no jump at a re-plan


def test_a_budget_deriving_e_epochs_trains_as_epochs_e(data_dir, output_root):
    """Capped at 2 epochs by --epochs, well within its minute: the same losses as --epochs 2 (the calibration
    changed neither the weights nor the augmentation's stream)."""
    common = [*TINY, "--data-dir", str(data_dir), "--epochs", "2"]
    budgeted = simclr_train.main([*common, "--time-budget", "1", "--name", "budgeted"])
    simclr_train.main([*common, "--name", "plain"])
    spent = json.loads(budgeted.with_suffix(".config.json").read_text())["time_budget"]
    assert (spent["planned_epochs"], spent["stopped_by_budget"], spent["epochs_run"]) == (2, False, 2.0)
    assert spent["fitting_epochs"] > 2
    losses = [scalar_values(models_dir("simclr") / "tb_logs" / name) for name in ("budgeted", "plain")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-6)
    weights = [torch.load(models_dir("simclr") / f"{name}.ckpt", weights_only=True)["state_dict"]
               for name in ("budgeted", "plain")]
    assert all(torch.allclose(weights[0][k].float(), weights[1][k].float(), atol=1e-6) for k in weights[1])


PROBE = """
import runpy, sys
codes = []
for argv in {cases!r}:
    sys.argv = ["pretrain/simclr/train.py", *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        codes.append(stop.code)
print(repr((codes, sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "pytorch_lightning"))))))
"""


def test_budget_mistakes_are_one_line_errors_before_torch(output_root):
    cases = [["--time-budget", "0"], ["--time-budget", "-1"], ["--time-budget", "20000"],
             ["--time-budget", "5", "--resume", "--name", "x"]]
    done = subprocess.run([sys.executable, "-c", PROBE.format(cases=cases)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    codes, heavy = eval(done.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases) and heavy == []
    errors = done.stderr.strip().splitlines()
    assert len(errors) == len(cases) and all(line.startswith("error: ") for line in errors), errors
    assert "argument --time-budget: must be a number in (0, 10080], got 0" in errors[0]
    assert "--time-budget and --resume exclude each other" in errors[3] and "--epochs N" in errors[3]
    assert not output_root.exists()


def test_epochs_default_to_100_without_a_budget_and_cap_it_with_one():
    parser = simclr_train.build_parser()
    assert parser.parse_args([]).epochs == 100 and parser.parse_args(["--time-budget", "1"]).epochs is None
    assert parser.parse_args(["--time-budget", "1", "--epochs", "7"]).epochs == 7


def test_calibration_of_a_slow_step_stops_at_its_share_of_the_budget():
    """A step slower than the budget's calibration share: one untimed and one timed call, not 2 + 5."""
    from common.training.time_budget import timed_steps

    calls = []

    def slow_step():
        calls.append(time.perf_counter())
        time.sleep(0.05)

    per_step, _ = timed_steps(slow_step, torch.device("cpu"), limit_s=0.01)
    assert len(calls) == 2 and 0.04 < per_step < 0.5
    calls.clear()
    timed_steps(slow_step, torch.device("cpu"))  # no limit: every call
    assert len(calls) == WARMUP_STEPS + TIMED_STEPS
