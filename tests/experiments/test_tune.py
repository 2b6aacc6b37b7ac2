"""scripts/tune.py: an Optuna study of real (tiny) pretraining runs in a temporary SQLite file, with a pruned trial,
a search resumed after its process died, and the report (best.yaml that --config reruns, tables, plots)."""
import os
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from pretrain import base
from pretrain.simclr.hparams import SimCLRHparams
from pretrain.simclr.train import build_parser as simclr_parser
from experiments import tune, tuning
from utils import models_dir

STUDY = "tune-simclr-breastmnist"
# the kNN monitor's validation AUROC, epoch by epoch (3 per trial): trials 0-2 set the median (0.75 at epoch 2),
# trial 3 falls below it at epoch 2 and is pruned there, trial 4 is the best; the resumed search reruns a trial
MONITOR = [0.70, 0.75, 0.80] * 3 + [0.60, 0.55] + [0.80, 0.85, 0.90] + [0.70, 0.75, 0.80]


@pytest.fixture
def monitor(monkeypatch):
    """The monitor's values from MONITOR (the training itself is real): which trial the pruner stops is then known."""
    values = iter(MONITOR)
    monkeypatch.setattr(base, "knn_monitor_metrics", lambda *args, **kwargs: {"val/knn_acc": 0.5,
                                                                              "val/knn_auroc": next(values)})
    return values


def test_study_prunes_reports_and_resumes_after_its_process_died(data_dir, output_root, tmp_path, monitor, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--method", "simclr", "--backbone", "small_cnn",
            "--budget-epochs", "3", "--storage", storage, "--accelerator", "cpu"]
    written = tune.main([*argv, "--trials", "5"])
    study = optuna.load_study(study_name=STUDY, storage=storage)
    states = [trial.state for trial in study.trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE], states
    pruned = study.trials[3]
    assert pruned.user_attrs["epochs"] == 2 and pruned.intermediate_values == pytest.approx({0: 0.60, 1: 0.55})
    assert [t.value for t in study.trials if t.state == TrialState.COMPLETE] == pytest.approx([0.80, 0.80, 0.80, 0.90])
    # the first trial is the method's defaults; every trial is a run of the method's own
    defaults = study.trials[0].params
    assert (defaults["lr"], defaults["temperature"], defaults["aug"], defaults["aug_strength"]) == \
           (SimCLRHparams.LR, 0.07, "novel", 1.0)
    models = models_dir("simclr")
    assert (models / f"{STUDY}-trial-4.ckpt").is_file() and not (models / f"{STUDY}-trial-3.ckpt").exists()
    assert (models / "tb_logs" / f"{STUDY}-trial-3").is_dir()  # the pruned trial's curves stay in TensorBoard
    # the report: best.yaml reruns with --config as the best trial ran
    assert set(written) == {"trials", "best", "history", "importances"}
    for key in ("history", "importances"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 3 | pruned | 0.55 | 2 |" in written["trials"].read_text()
    best = study.trials[4]
    args = simclr_parser().parse_args(["--config", str(written["best"])])
    assert (args.name, args.epochs, args.backbone, args.data_dir) == (f"{STUDY}-best", 3, "small_cnn", str(data_dir))
    assert (args.lr, args.temperature, args.aug, args.batch_size) == \
           (best.params["lr"], best.params["temperature"], best.params["aug"], best.params["batch_size"])
    # a killed search: its running trial's process is gone; the same command marks it failed and runs it again
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = study.ask()
    tuning.suggest(left, tuning.search_space(SimCLRHparams, 2, 256, 48))
    left.set_user_attr("host", socket.gethostname())
    left.set_user_attr("pid", dead.pid)
    capsys.readouterr()
    tune.main([*argv, "--trials", "6"])
    assert "were left running by a process that is gone" in capsys.readouterr().out
    study = optuna.load_study(study_name=STUDY, storage=storage)
    states = [trial.state for trial in study.trials]
    assert states[left.number] == TrialState.FAIL and states.count(TrialState.RUNNING) == 0
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    again = [t for t in study.trials if t.user_attrs.get("retry_of") == left.number]
    assert len(again) == 1 and again[0].params == left.params and again[0].state == TrialState.COMPLETE
    with pytest.raises(StopIteration):
        next(monitor)  # every value was read: no trial ran that should not have
    tune.main([*argv, "--trials", "6", "--report"])  # the report alone runs no trial


@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_every_methods_search_space_gives_options_its_command_line_takes(method):
    """Defaults first, then random draws: each trial's options parse with the method's own parser, and the learning
    rate scales with the batch as the method's default does."""
    from pretrain import method_hparams

    hparams = method_hparams(method)
    space = tuning.search_space(hparams, 2, 256, 500)
    defaults = tuning.default_params(hparams, space, 2, 500, 256)
    args = tuning.trial_options(hparams, {}, defaults, "t", 5)
    scale = args.batch_size / hparams.LR_BATCH if hparams.LR_BATCH else 1
    assert args.lr == pytest.approx(hparams.LR * scale) and args.weight_decay == hparams.WEIGHT_DECAY
    assert args.aug == "novel" and args.batch_size == 256 and args.val_every == 1 and args.epochs == 5
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = tuning.suggest(study.ask(), space)
        args = tuning.trial_options(hparams, {}, params, "t", 5)
        assert args.batch_size in (32, 64, 128, 256) and 0.25 <= args.aug_strength <= 1.5
    assert "aug" not in tuning.search_space(hparams, 3, 256, 500)  # volumes have one sequence


def test_a_study_of_another_search_is_refused(data_dir, output_root, tmp_path, monitor, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--backbone", "small_cnn", "--trials", "1",
            "--budget-epochs", "3", "--storage", storage, "--accelerator", "cpu"]
    tune.main(argv)
    from utils import run_cli

    with pytest.raises(SystemExit) as stop:
        run_cli(tune.main, [*argv[:-6], "--budget-epochs", "2", "--storage", storage, "--accelerator", "cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert stop.value.code == 2 and len(errors) == 1 and "budget_epochs 3 there, 2 here" in errors[0], errors


def test_n_jobs_runs_worker_processes_on_one_study(data_dir, output_root, tmp_path):
    """--n-jobs 2: the defaults first in this process, then worker processes, each drawing its own trials."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tune.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--method", "byol", "--backbone", "small_cnn",
               "--trials", "3", "--budget-epochs", "1", "--storage", storage, "--accelerator", "cpu", "--n-jobs", "2"])
    study = optuna.load_study(study_name="tune-byol-breastmnist", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    pids = [t.user_attrs["pid"] for t in study.trials]
    assert len(finished) >= 3 and pids[0] == os.getpid()  # the queued defaults: here, before the workers start
    assert os.getpid() not in pids[1:]  # the rest: the workers (how they share them depends on their start-up time)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)  # no trial twice


class NoTest(dict):
    """A data set's splits that fail the test when the test split is read."""

    def __getitem__(self, split):
        if split == "test":
            pytest.fail("the few-label objective read the test split")
        return super().__getitem__(split)


def test_the_few_label_objective_is_the_probe_on_train_draws_scored_on_val_only(data_dir, output_root, tmp_path,
                                                                                 capsys):
    from common.data.datamodule import MedMNISTDataModule
    from experiments.few_label import few_label_score

    storage = f"sqlite:///{tmp_path / 'few.db'}"
    written = tune.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--backbone", "small_cnn",
                         "--objective", "few-label", "--labels", "3", "--draws", "2", "--time-budget", "0.05",
                         "--trials", "2", "--max-batch-size", "16", "--storage", storage, "--accelerator", "cpu"])
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params["features"] == "last"  # the defaults first; the features are searched
    assert "val/few_label_auroc" in written["trials"].read_text() and "0.05 minutes each" in capsys.readouterr().out
    for trial in study.trials:
        assert trial.user_attrs["options"]["time_budget"] == 0.05 and trial.user_attrs["options"]["epochs"] is None
        data = MedMNISTDataModule("breastmnist", 28, data_dir).load()
        data.splits = NoTest(data.splits)
        score = few_label_score(models_dir("simclr") / f"{trial.user_attrs['run']}.ckpt", data,
                                trial.params["features"], labels=3, draws=2)
        assert score["aurocs"] == pytest.approx(trial.user_attrs["few_label_aurocs"])  # what the trial scored
        assert trial.value == pytest.approx(sum(score["aurocs"]) / 2)
    assert "time_budget: 0.05" in written["best"].read_text()


def test_the_searched_network_and_resize_become_the_trials_options():
    space = tuning.search_space(SimCLRHparams, 2, 256, 500, few_label=True, networks=True, size=28)
    assert space["network"][1:] == ("small_cnn", "resnet18-imagenet", "resnet18-small", "vit_tiny")
    params = {**tuning.default_params(SimCLRHparams, space, 2, 500, 256), "network": "resnet18-small", "resize": 64,
              "features": "stage:2"}
    args = tuning.trial_options(SimCLRHparams, {"dataset": "breastmnist"}, params, "t", 5, minutes=4.0)
    assert (args.backbone, args.stem, args.resize, args.features, args.time_budget) == \
           ("resnet18", "small", 64, "stage:2", 4.0)
    params["resize"] = 0
    args = tuning.trial_options(SimCLRHparams, {"dataset": "breastmnist"}, params, "t", 5)
    assert args.resize is None and args.epochs == 5  # no resize, though breastmnist's recipe has one
    params.update(network="resnet18-imagenet", lr=1e-3)
    args = tuning.trial_options(SimCLRHparams, {"dataset": "breastmnist"}, params, "t", 5)
    assert (args.stem, args.resize, args.lr) == ("imagenet", None, 1e-3)  # the recipe's network, still the trial's


def test_the_report_gives_a_failed_trial_no_value():
    import optuna

    from experiments.tuning import trial_rows

    study = optuna.create_study(direction="maximize")
    for state, value in ((optuna.trial.TrialState.FAIL, None), (optuna.trial.TrialState.PRUNED, None),
                         (optuna.trial.TrialState.COMPLETE, 0.7)):
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params={"lr": 0.1},
                                                  distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)},
                                                  intermediate_values={3: 0.9}))
    values = [next(v for k, v in row.items() if k not in ("trial", "state", "epochs", "seconds", "lr"))
              for row in trial_rows(study)]
    assert values == [None, 0.9, 0.7]  # failed: none (its 0.9 was along the way); pruned: its last; complete: its own
