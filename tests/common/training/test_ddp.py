"""Real 2-process DDP on the CPU (gloo), launched by torchrun as the README's example launches a stage: gathered
negatives, MoCo's queue, the sharded sampler, every stage's command line, files written once, --resume.
The processes run tests/helpers/ddp_worker.py once for the module; each test reads what they measured."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pretrain import METHODS
from utils import OUTPUT_ROOT_VARIABLE
from conftest import REPO as REPOSITORY

REPO = str(REPOSITORY)
WORLD = 2
RUNS = {"pretrain/simclr": "ddp-simclr", "pretrain/moco": "ddp-moco", "pretrain/byol": "ddp-byol",
        "downstream/logistic_regression": "ddp-probe", "downstream/resnet": "ddp-finetune"}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, data_dir):
    """Run the worker under torchrun; returns (what each rank measured, the output root)."""
    folder = tmp_path_factory.mktemp("ddp")
    results, root = folder / "results", folder / "out"
    results.mkdir()
    env = {**os.environ, OUTPUT_ROOT_VARIABLE: str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               os.path.join(REPO, "tests", "helpers", "ddp_worker.py"), str(results), str(data_dir)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], root, done.stdout


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_and_gradients_across_processes_equal_one_process_on_the_global_batch(ddp, method):
    """SimCLR gathers its negatives from both processes: each process's loss is the one-process loss of the global
    batch. MoCo and BYOL take no negatives from other processes: the mean of their losses is. Gradients averaged
    over the processes (as DDP averages them) equal the one-process gradients in every method."""
    measured = ddp[0][0]["equality"][method]
    reference = measured["reference"]
    if method == "simclr":
        for loss in measured["losses"]:
            assert loss == pytest.approx(reference["loss"], rel=1e-5)
    assert sum(measured["losses"]) / WORLD == pytest.approx(reference["loss"], rel=1e-5)
    assert measured["grads"].keys() == reference["grads"].keys() and measured["grads"]
    for name, grad in reference["grads"].items():
        torch.testing.assert_close(measured["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_moco_queue_receives_the_keys_of_every_process_in_rank_order(ddp):
    ranks = [r["moco_queue"] for r in ddp[0]]
    own = [r["own_keys"] for r in ranks]
    added = sum(len(k) for k in own)
    for r in ranks:  # the same queue on every process: the oldest keys dropped, rank 0's keys, then rank 1's
        torch.testing.assert_close(r["after"][-added:], torch.cat(own))
        torch.testing.assert_close(r["after"][:-added], r["before"][added:])
    assert not torch.equal(own[0], own[1])


def test_each_training_image_is_seen_once_per_epoch_across_processes(ddp):
    """An odd number of images on 2 processes: each epoch every image but one is seen exactly once, the one left
    out changes between epochs, and a real Lightning fit trains on exactly what the loader gives."""
    ranks = [r["sampler"] for r in ddp[0]]
    n = ranks[0]["n"]
    left_out = []
    for epoch in (0, 1):
        seen = sorted(i for r in ranks for i in r["by_loader"][epoch])
        assert len(seen) == len(set(seen)) == n - 1 and set(seen) <= set(range(n))
        assert len(ranks[0]["by_loader"][epoch]) == len(ranks[1]["by_loader"][epoch])  # equal shares
        left_out.append(set(range(n)) - set(seen))
        for r in ranks:
            assert r["by_fit"][epoch] == r["by_loader"][epoch]
    assert left_out[0] != left_out[1]


@pytest.mark.parametrize("stage", list(RUNS))
def test_every_stage_runs_on_two_processes_and_writes_its_files_once(ddp, stage):
    root, name = ddp[1], RUNS[stage]
    models = root / stage / "models"
    assert (models / f"{name}.ckpt").is_file()
    record = json.loads((models / f"{name}.config.json").read_text())
    assert record["options"]["devices"] == "2"
    versions = sorted(p.name for p in (models / "tb_logs" / name).iterdir())
    assert versions == ["version_0"]  # the resumed run continues its version; no second process makes its own
    folder = models / "tb_logs" / name / "version_0"
    attempts = 2 if name == "ddp-simclr" else 1
    events = list(folder.glob("events.out.tfevents.*"))  # events.out.tfevents.<time>.<host>.<pid>.<n>
    heatmaps = 1 if stage == "downstream/resnet" else 0  # finetuning's heat-map grid, written after the fit
    assert len(events) == attempts + heatmaps and len({e.name.split(".")[-2] for e in events}) == 1  # rank 0 only
    checkpoints = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert "config.json" in checkpoints and "last.ckpt" in checkpoints and len(checkpoints) == 3, checkpoints
    assert ddp[2].count(f"saved {models / name}.ckpt") == attempts  # the summary printed by rank 0 only


def test_resume_of_a_ddp_run_continues_where_it_stopped(ddp):
    root = ddp[1]
    models = root / "pretrain/simclr/models"
    checkpoint = torch.load(models / "tb_logs/ddp-simclr/version_0/checkpoints/last.ckpt", map_location="cpu",
                            weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 3  # 2 epochs of 24 images per process / 8
    assert json.loads((models / "ddp-simclr.config.json").read_text())["options"]["resume"] is True
    assert ddp[2].count("resuming ddp-simclr") == 1


@pytest.mark.parametrize("method, on_gpu, given, expected", [
    ("simclr", False, None, False), ("simclr", True, None, True), ("byol", True, None, True),
    ("moco", True, None, False), ("simclr", True, False, False), ("moco", True, True, True)])
def test_sync_batchnorm_is_each_methods_default_on_gpus_only(monkeypatch, method, on_gpu, given, expected):
    from pretrain import hparams, method_class

    monkeypatch.setattr(hparams, "uses_gpu", lambda accelerator: on_gpu)
    assert hparams.checked_sync_batchnorm(method_class(method), "auto", given) is expected


def test_sync_batchnorm_on_the_cpu_is_a_one_line_error(data_dir, output_root, capsys):
    from pretrain.simclr import train as simclr_train
    from utils import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(simclr_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--accelerator", "cpu",
                                    "--sync-batchnorm"])
    assert exit_info.value.code == 2 and "SyncBatchNorm runs on CUDA only" in capsys.readouterr().err
    assert not output_root.exists()
