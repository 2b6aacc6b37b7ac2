"""scripts/slurm/pretrain.sbatch: its syntax, the command lines it generates (dry run), and the checkpoint a
requeued job resumes from."""
import os
import shlex
import subprocess
import time

import pytest

from common.training.trainer import resume_point
from pretrain import method_hparams
from pretrain.cli import pretrain_parser
from utils import UserError, models_dir
from conftest import REPO as REPOSITORY

REPO = str(REPOSITORY)
SCRIPT = os.path.join(REPO, "scripts", "slurm", "pretrain.sbatch")


def dry_run(*args, **env) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(["bash", SCRIPT, *args], env={**environment, "DRY_RUN": "1", "SLURM_SUBMIT_DIR": REPO, **env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


@pytest.fixture(autouse=True)
def gpu_node(monkeypatch):
    """The commands are a GPU node's: parsed here, on a machine that may have none, without the hardware check."""
    monkeypatch.setattr("common.cli.parsers.check_hardware", lambda *args: None)


@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_one_node_command_runs_the_method_on_every_gpu_and_parses(method):
    command = dry_run("--dataset", "pathmnist", "--size", "64", "--name", "run 1", METHOD=method,
                      SLURM_NTASKS_PER_NODE="4", SLURM_JOB_NUM_NODES="1")
    assert command[:3] == ["srun", "--kill-on-bad-exit=1", "python"]
    assert command[3] == os.path.join(REPO, "pretrain", method, "train.py")
    args = pretrain_parser(method_hparams(method)).parse_args(command[4:])
    assert (args.accelerator, args.devices, args.num_nodes) == ("gpu", "4", 1)
    assert (args.dataset, args.size, args.name, args.resume) == ("pathmnist", 64, "run 1", False)


def test_several_nodes_and_a_requeued_job_resume():
    command = dry_run("--dataset", "bloodmnist", SLURM_NTASKS_PER_NODE="8", SLURM_JOB_NUM_NODES="2",
                      SLURM_RESTART_COUNT="1")
    args = pretrain_parser(method_hparams("simclr")).parse_args(command[4:])
    assert (args.devices, args.num_nodes, args.resume) == ("8", 2, True)


def test_an_unknown_method_is_a_one_line_error():
    done = subprocess.run(["bash", SCRIPT], env={**os.environ, "DRY_RUN": "1", "METHOD": "simsiam",
                                                 "SLURM_SUBMIT_DIR": REPO}, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no method 'simsiam'" in done.stderr and "byol, moco, simclr" in done.stderr


def test_resume_takes_the_newest_of_last_and_the_slurm_checkpoint(output_root):
    run = models_dir("simclr") / "tb_logs" / "job"
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        resume_point("simclr", "job")
    last0 = run / "version_0" / "checkpoints" / "last.ckpt"
    last0.parent.mkdir(parents=True)
    last0.write_bytes(b"0")
    (run / "version_1").mkdir()  # the requeued attempt: its logger folder, no checkpoint yet
    assert resume_point("simclr", "job") == (0, last0)
    hpc = run / "hpc_ckpt_1.ckpt"  # saved by Lightning on SIGUSR1, after last.ckpt
    hpc.write_bytes(b"1")
    os.utime(hpc, ns=(time.time_ns() + 10**9,) * 2)
    assert resume_point("simclr", "job") == (1, hpc)
    last1 = run / "version_1" / "checkpoints" / "last.ckpt"
    last1.parent.mkdir()
    last1.write_bytes(b"2")
    os.utime(last1, ns=(time.time_ns() + 2 * 10**9,) * 2)
    assert resume_point("simclr", "job") == (1, last1)


def test_only_the_newest_slurm_checkpoint_of_a_run_is_kept(output_root):
    run = models_dir("simclr") / "tb_logs" / "job"
    run.mkdir(parents=True)
    for n in (1, 2, 3):  # three pre-emptions, each a full checkpoint
        (run / f"hpc_ckpt_{n}.ckpt").write_bytes(bytes([n]))
        os.utime(run / f"hpc_ckpt_{n}.ckpt", ns=(time.time_ns() + n * 10**9,) * 2)
    assert resume_point("simclr", "job") == (0, run / "hpc_ckpt_3.ckpt")
    assert sorted(p.name for p in run.glob("hpc_ckpt_*")) == ["hpc_ckpt_3.ckpt"]
