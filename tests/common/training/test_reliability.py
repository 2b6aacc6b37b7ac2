"""Runs survive interruption and bad input: resume, atomic saves, NaN stop, seeds, one-line errors."""
import importlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO
from helpers.events import scalar_values
from pretrain import base as pretrain_base
from pretrain.simclr import train as simclr_train
from pretrain.simclr.module import SimCLR
from utils import run_cli

PRETRAIN = str(REPO / "pretrain/simclr/train.py")


def run_env(root):
    return {**os.environ, "MEDSIMCLR_OUTPUT_ROOT": str(root), "PYTHONUNBUFFERED": "1"}


def run_dir(root, name="pretrain-breastmnist"):
    return root / "pretrain/simclr/models/tb_logs" / name


def test_sigkill_then_resume_finishes_the_run(data_dir, tmp_path):
    args = [sys.executable, PRETRAIN, "--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "5",
            "--batch-size", "16"]
    process = subprocess.Popen(args, env=run_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir(tmp_path) / "version_0/checkpoints/last.ckpt"
    deadline = time.time() + 120
    # killed mid-run, once a checkpoint and the points of its epochs are on disk (Lightning logs an epoch's
    # training metrics a moment after its checkpoint)
    while (not (last.exists() and scalar_values(run_dir(tmp_path))) and process.poll() is None
           and time.time() < deadline):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists(), "the run never saved a checkpoint"
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 4 and not (tmp_path / "pretrain/simclr/models/pretrain-breastmnist.ckpt").exists()

    result = subprocess.run(args + ["--resume"], env=run_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming pretrain-breastmnist" in result.stdout
    final = torch.load(last, weights_only=True)
    assert (final["epoch"], final["global_step"]) == (4, 5 * 3)  # 5 epochs of 3 batches, none repeated
    assert sorted(p.name for p in run_dir(tmp_path).iterdir()) == ["version_0"]  # same TensorBoard run
    assert len(list((run_dir(tmp_path) / "version_0").glob("events.out.tfevents.*"))) == 2
    assert len(scalar_values(run_dir(tmp_path))) == 5  # one point per epoch, across both attempts
    assert (tmp_path / "pretrain/simclr/models/pretrain-breastmnist.ckpt").is_file()


DIE_DURING_SAVE = """
import os, sys, torch
import common.training.checkpoint_io
real_save = torch.save
def dying_save(obj, handle, *args, **kwargs):
    # a later save of last.ckpt: write half of it, then die as a SIGKILL would
    if os.path.basename(handle.name).startswith(".last.ckpt.") and os.path.exists(
            os.path.join(os.path.dirname(handle.name), "last.ckpt")) and obj["epoch"] >= 1:
        import io
        buffer = io.BytesIO(); real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2]); handle.flush()
        os._exit(137)
    return real_save(obj, handle, *args, **kwargs)
common.training.checkpoint_io.torch.save = dying_save
from pretrain.simclr import train
train.main(sys.argv[1:])
"""


def test_crash_during_save_keeps_previous_checkpoint(data_dir, tmp_path):
    result = subprocess.run([sys.executable, "-c", DIE_DURING_SAVE, "--dataset", "breastmnist", "--data-dir",
                             str(data_dir), "--epochs", "3", "--batch-size", "16", "--recipe", "study"],
                            env=run_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 137, result.stderr[-2000:]
    folder = run_dir(tmp_path) / "version_0/checkpoints"
    assert list(folder.glob(".last.ckpt.*.tmp")), "the save was not interrupted half-way"
    previous = torch.load(folder / "last.ckpt", weights_only=True)  # intact and loadable
    assert previous["epoch"] == 0 and "encoder.conv1.weight" in previous["state_dict"]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(data_dir, output_root, monkeypatch, capsys):
    calls = {"n": 0}
    real_normalize = pretrain_base.normalize

    def poisoned(x):  # the 5th training batch (epoch 1 of 3 batches/epoch) turns into NaN
        calls["n"] += 1
        out = real_normalize(x)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(pretrain_base, "normalize", poisoned)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(simclr_train.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "3",
                                    "--batch-size", "16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: loss is nan at step") and "last good checkpoint" in err and "\n" not in err
    last = torch.load(run_dir(output_root) / "version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (output_root / "pretrain/simclr/models/pretrain-breastmnist.ckpt").exists()


def first_losses(data_dir, root, monkeypatch, seed):
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(root))
    simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "5", "--samples", "16",
                       "--batch-size", "16", "--seed", str(seed), "--val-every", "5"])
    return scalar_values(run_dir(root))  # one step per epoch: the first 5 step losses


def test_same_seed_same_losses_different_seed_different(data_dir, tmp_path, monkeypatch):
    a = first_losses(data_dir, tmp_path / "a", monkeypatch, seed=3)
    b = first_losses(data_dir, tmp_path / "b", monkeypatch, seed=3)
    c = first_losses(data_dir, tmp_path / "c", monkeypatch, seed=4)
    assert len(a) == 5 and a == b
    assert a != c


# ---- bad input through the real command line --------------------------------------------------------

def make_inputs(folder, data_dir):
    """Files the bad-input cases point at: broken npz files and checkpoints of the wrong kind."""
    folder.mkdir()
    for name in ("corrupt", "truncated", "keys", "shapes"):
        (folder / name).mkdir()
    (folder / "corrupt/breastmnist.npz").write_bytes(b"this is not a zip file")
    whole = (data_dir / "breastmnist.npz").read_bytes()
    (folder / "truncated/breastmnist.npz").write_bytes(whole[: len(whole) // 2])
    np.savez(folder / "keys/breastmnist.npz", train_images=np.zeros((4, 28, 28), np.uint8))
    arrays = {f"{s}_{k}": np.zeros((4, 28, 28, 3) if k == "images" else (4, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(folder / "shapes/breastmnist.npz", **arrays)
    torch.save({"state_dict": {"head.weight": torch.zeros(2, 512), "head.bias": torch.zeros(2)},
                "hyper_parameters": {"stage": "logistic_regression"}}, folder / "head.ckpt")
    grey = SimCLR(in_channels=1)
    torch.save({"state_dict": grey.state_dict(), "hyper_parameters": dict(grey.hparams)}, folder / "grey-encoder.ckpt")
    volumes = SimCLR(backbone="small_cnn_3d", in_channels=1)
    torch.save({"state_dict": volumes.state_dict(), "hyper_parameters": dict(volumes.hparams)},
               folder / "volume-encoder.ckpt")
    torch.save({"state_dict": grey.state_dict(), "hyper_parameters": {**grey.hparams, "method": "swav"}},
               folder / "future-method.ckpt")
    (folder / "not-a-folder").write_text("a file where the output folder should be")


LR = "downstream/logistic_regression/train.py"
FT = "downstream/resnet/train.py"
BAD_INPUTS = {
    "unknown dataset": ("pretrain/simclr/train.py", ["--dataset", "bloodmnst"], "did you mean bloodmnist"),
    "unsupported size": ("pretrain/simclr/train.py", ["--size", "32"], "unsupported size 32"),
    "missing data, no network": ("pretrain/simclr/train.py", ["--data-dir", "{inputs}/nothing-here"],
                                 "could not be downloaded"),
    "corrupt npz": ("pretrain/simclr/train.py", ["--data-dir", "{inputs}/corrupt"], "not a readable npz"),
    "truncated npz": (FT, ["--data-dir", "{inputs}/truncated", "--init", "none"], "not a readable npz"),
    "npz missing keys": ("pretrain/simclr/train.py", ["--data-dir", "{inputs}/keys"], "no train_images"),
    "npz wrong shapes": ("pretrain/simclr/train.py", ["--data-dir", "{inputs}/shapes"], "has shape"),
    "checkpoint missing": (LR, ["--encoder", "{inputs}/nope.ckpt"], "no such checkpoint"),
    "wrong kind of checkpoint": (LR, ["--encoder", "{inputs}/head.ckpt"], "is a logistic-regression head"),
    "encoder of volumes on images": (FT, ["--dataset", "bloodmnist", "--init", "{inputs}/volume-encoder.ckpt"],
                                     "takes 1-channel volumes"),  # grey and colour convert; 2D and 3D do not
    "samples larger than split": (FT, ["--init", "none", "--samples", "1000"], "--samples 1000"),
    "samples per class zero": (LR, ["--encoder", "random", "--samples-per-class", "0"], "must be an integer >= 1"),
    "negative learning rate of the probe": (LR, ["--encoder", "random", "--lr", "-1"], "--lr: must be a number in (0, 10]"),
    "negative learning rate of finetuning": (FT, ["--init", "none", "--lr", "-1"], "--lr: must be a number in (0, 10]"),
    "a GPU this machine lacks": (FT, ["--init", "none", "--accelerator", "mps"], "this machine has no Apple GPU"),
    "samples per class too many": (FT, ["--init", "none", "--samples-per-class", "30"], "class 0 has only"),
    "epochs zero": (LR, ["--encoder", "random", "--epochs", "0"], "--epochs"),
    "batch larger than samples": ("pretrain/simclr/train.py", ["--batch-size", "1000"], "--batch-size 1000"),
    "unknown aug": ("pretrain/simclr/train.py", ["--aug", "fancy"], "--aug"),
    "output not writable": (FT, ["--init", "none"], "cannot write"),
    "resume with nothing": ("pretrain/simclr/train.py", ["--resume"], "no checkpoint to resume"),
    "bf16 on a CPU": ("pretrain/simclr/train.py", ["--precision", "bf16-mixed", "--accelerator", "cpu"],
                      "no fast bfloat16"),
    "unknown backbone": ("pretrain/moco/train.py", ["--backbone", "resnet19"], "--backbone"),
    "stem of a backbone without stems": ("pretrain/moco/train.py", ["--backbone", "small_cnn", "--stem", "small"],
                                         "no --stem choice"),
    "backbone beside a pretrained encoder": (LR, ["--encoder", "{inputs}/grey-encoder.ckpt", "--backbone",
                                                  "small_cnn"], "--encoder random or imagenet only"),
    "init of another backbone": ("pretrain/moco/train.py", ["--init", "{inputs}/grey-encoder.ckpt", "--backbone",
                                                            "small_cnn"], "differs from the --init checkpoint's"),
    "unknown method in a checkpoint": ("pretrain/test.py", ["--checkpoint", "{inputs}/future-method.ckpt"],
                                       "unknown pretraining method 'swav'"),
}


def snapshot(*folders):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in sorted(f.rglob("*"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("bad") / "inputs"
    make_inputs(folder, data_dir)
    return folder


def command(script: str):
    """The `main` of a command, as `python <script>` runs it."""
    return importlib.import_module(script.removesuffix(".py").replace("/", ".")).main


THROUGH_A_SHELL = ("unknown dataset", "missing data, no network", "unknown aug")  # also as a new process


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_error_and_writes_nothing(case, inputs, data_dir, tmp_path, monkeypatch, capsys):
    """In this process (a new one per case costs seconds of imports); THROUGH_A_SHELL below runs some as users do."""
    script, extra, expected = BAD_INPUTS[case]
    args = ["--dataset", "breastmnist", "--data-dir", str(data_dir)] + [a.format(inputs=inputs) for a in extra]
    root = inputs / "not-a-folder" if case == "output not writable" else tmp_path / "out"
    for name, value in run_env(root).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MEDSIMCLR_MEDMNIST_MIRROR", "http://127.0.0.1:9")  # closed port: no network
    monkeypatch.chdir(tmp_path)
    before = snapshot(inputs, data_dir, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command(script), args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]
    assert snapshot(inputs, data_dir, tmp_path) == before


@pytest.mark.parametrize("case", THROUGH_A_SHELL)
def test_bad_input_through_a_new_process(case, inputs, data_dir, tmp_path):
    script, extra, expected = BAD_INPUTS[case]
    args = ["--dataset", "breastmnist", "--data-dir", str(data_dir)] + [a.format(inputs=inputs) for a in extra]
    env = {**run_env(tmp_path / "out"), "MEDSIMCLR_MEDMNIST_MIRROR": "http://127.0.0.1:9"}
    before = snapshot(inputs, data_dir, tmp_path)
    result = subprocess.run([sys.executable, str(REPO / script), *args], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]
    assert snapshot(inputs, data_dir, tmp_path) == before


def test_a_second_run_of_a_name_that_is_running_exits_at_once(data_dir, tmp_path, monkeypatch, capsys):
    """The name's lock held by a live process: one line naming it, exit 2, nothing written; a dead holder's lock
    (or a stale one of another host) is taken over with a note, and the finished run leaves no lock behind."""
    import json
    import socket

    from common.training import run_lock

    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(tmp_path))
    models = tmp_path / "pretrain/simclr/models"
    models.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = models / "same.lock"
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": "now"}))
        args = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16",
                "--backbone", "small_cnn", "--name", "same"]
        with pytest.raises(SystemExit) as exit_info:
            run_cli(simclr_train.main, args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(lines) == 1
        assert f"run same is already running: process {holder.pid} on {socket.gethostname()}" in lines[0]
        assert sorted(p.name for p in models.iterdir()) == ["same.lock"] and json.loads(lock.read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    simclr_train.main(args)  # the holder is gone: taken over
    assert "taking over the lock of run same from process" in capsys.readouterr().out
    assert (models / "same.ckpt").is_file() and not lock.exists()
    lock.write_text(json.dumps({"host": "node-17", "pid": 1, "started": "then"}))  # another host, alive
    with pytest.raises(SystemExit):
        run_cli(simclr_train.main, [*args, "--overwrite"])
    assert "process 1 on node-17" in capsys.readouterr().err
    stale = time.time() - run_lock.STALE_S - 60
    os.utime(lock, (stale, stale))  # its heartbeat stopped long ago
    simclr_train.main([*args, "--overwrite"])
    assert "from node-17, untouched for" in capsys.readouterr().out and not lock.exists()


def test_a_full_disk_is_one_line_keeps_every_checkpoint_and_resume_continues(data_dir, tmp_path, monkeypatch,
                                                                              capsys):
    """torch's zip writer on a full disk raises RuntimeError "unexpected pos"; the run says so in one line, leaves
    no partial file, keeps epoch 0's checkpoints, and --resume finishes once there is room. Too little free space
    before a run starts is the same kind of line."""
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(tmp_path))
    args = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "3", "--batch-size", "16",
            "--backbone", "small_cnn", "--select-by", "knn", "--name", "full"]
    real, saves = torch.save, []

    def full_disk(obj, f, *more, **options):
        saves.append(1)
        if len(saves) > 2:  # epoch 0's last.ckpt and best checkpoint fit; the next save does not
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 15899648 vs 15899544")
        return real(obj, f, *more, **options)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full_disk)
        with pytest.raises(SystemExit) as exit_info:
            run_cli(simclr_train.main, args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: no space left on"), lines
    assert "MB free; the checkpoint needs about" in lines[0] and "--resume" in lines[0]
    checkpoints = run_dir(tmp_path, "full") / "version_0/checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not (tmp_path / "pretrain/simclr/models/full.ckpt").exists()
    simclr_train.main([*args, "--resume"])
    assert torch.load(tmp_path / "pretrain/simclr/models/full.ckpt", weights_only=True)["epoch"] >= 1

    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))  # 1 MB free
    with pytest.raises(SystemExit):
        run_cli(simclr_train.main, [*args, "--name", "no-room"])
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: no space left on") and "1 MB free; the run's checkpoints need about" in line
