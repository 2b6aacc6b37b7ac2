"""The README's "Published checkpoints" commands, run as written against a Zenodo-shaped local server."""
import hashlib
import importlib
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import common.data.sources
from helpers import study_format
from conftest import REPO
from helpers.fakedata import write_npz
from test_download_checkpoints import Zenodo
from utils import run_cli

TRAINING_SHORTCUT = ["--epochs", "1"]  # the README's training commands, shortened for a test


def readme_block(heading: str, index: int = 0) -> list[str]:
    """The command lines of the index-th bash block under a README heading (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, re.S)[index]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_as_user(line: str, env: dict, extra: list[str], new_process: bool = False) -> None:
    """Run a README line: its script's `main` with its arguments, in this process (a new process per line costs
    seconds of imports) with the user's environment, or as a new process from the repository."""
    argv = shlex.split(line)
    assert argv[0] == "python", line
    args = argv[2:] + (TRAINING_SHORTCUT if "train.py" in line else []) + extra
    if new_process:
        result = subprocess.run([sys.executable, argv[1], *args], env=env, cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return
    main = importlib.import_module(argv[1].removesuffix(".py").replace("/", ".")).main
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HOME", "MEDSIMCLR_OUTPUT_ROOT"):
            patch.setenv(name, env[name])
        patch.setattr(common.data.sources, "DEFAULT_DATA_DIR", Path(env["HOME"]) / ".medmnist")  # ~ as the user's
        patch.chdir(REPO)
        try:
            run_cli(main, args)
        except SystemExit as err:
            raise AssertionError(f"{line}: exit code {err.code}") from None


def user_home(tmp_path) -> dict:
    """A HOME whose ~/.medmnist holds the datasets the README names, and outputs kept under tmp_path."""
    home = tmp_path / "home"
    (home / ".medmnist").mkdir(parents=True)
    write_npz(home / ".medmnist", "bloodmnist", splits=(120, 24, 24))  # the README's probes take 100 samples
    write_npz(home / ".medmnist", "dermamnist", splits=(120, 21, 21))
    return {**os.environ, "HOME": str(home), "MEDSIMCLR_OUTPUT_ROOT": str(tmp_path / "out")}


def test_quick_start_and_stage_commands_run_as_written(tmp_path):
    env = user_home(tmp_path)
    main_job = readme_block("Quick start", 0)[0].split("&& ")[-1]  # after the venv and pip install
    assert main_job == "python pretrain/simclr/train.py --dataset bloodmnist"
    run_as_user(main_job, env, [], new_process=True)  # the newcomer's first command, exactly
    for line in readme_block("Quick start", 2)[:-1] + readme_block("The stages"):
        run_as_user(line, env, [])
    out = tmp_path / "out"
    for stage, name in [("pretrain/simclr", "bloodmnist-then-derma"), ("downstream/resnet", "baseline-bloodmnist"),
                        ("downstream/logistic_regression", "random-derma"), ("pretrain/moco", "moco-dermamnist")]:
        assert (out / stage / "models" / f"{name}.ckpt").is_file()
    assert (out / "downstream/resnet/models/baseline-dermamnist-10-spc.test.json").is_file()
    assert list((out / "pretrain/simclr/models").glob("*.tsne.png"))
    assert (out / "pretrain/moco/models/moco-dermamnist.test.json").is_file()


def test_published_checkpoint_commands_run_as_written(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    study_format.simclr_checkpoint(study / "pretrain-bloodmnist.ckpt")
    study_format.logistic_regression_checkpoint(study / "downstream-bloodmnist-100-samples.ckpt", 8)
    study_format.resnet_checkpoint(study / "baseline-bloodmnist-100-samples.ckpt", 8)
    server = Zenodo()
    server.files = {p.name: p.read_bytes() for p in study.iterdir()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = user_home(tmp_path)
    try:
        for line in readme_block("Published checkpoints"):
            run_as_user(line, env, ["--api-url", server.api] if "download_checkpoints.py" in line else [])
    finally:
        server.shutdown()
    out = tmp_path / "out"
    for stage, name in [("pretrain/simclr", "pretrain-bloodmnist"),
                        ("downstream/logistic_regression", "downstream-bloodmnist-100-samples"),
                        ("downstream/resnet", "baseline-bloodmnist-100-samples")]:
        placed = out / stage / "models" / f"{name}.ckpt"
        assert hashlib.md5(placed.read_bytes()).digest() == hashlib.md5((study / f"{name}.ckpt").read_bytes()).digest()
        if name != "pretrain-bloodmnist":
            assert placed.with_name(f"{name}.test.json").is_file()
    assert (out / "downstream/resnet/models/study-finetune-bloodmnist.ckpt").is_file()
    assert (out / "pretrain/simclr/models/bloodmnist-then-dermamnist.ckpt").is_file()


def test_your_own_data_walk_through_runs_as_written(tmp_path, monkeypatch):
    """README 'Your own data': the three commands on a folder of PNGs and its labels CSV, in a new user's home."""
    from helpers import scans

    home = tmp_path / "home"
    folder, labels = scans.csv_folder(home / "data" / "xrays", n=60, colour=False)
    labels.rename(home / "data" / "xrays.csv")
    env = {**os.environ, "HOME": str(home), "MEDSIMCLR_OUTPUT_ROOT": str(tmp_path / "out")}
    lines = readme_block("Your own data")
    assert len(lines) == 3 and all("--labels-from ~/data/xrays.csv" in line for line in lines)
    for line in lines:
        quick = ["--seeds", "0", "--protocols", "probe", "--references", "pixels"] if "label_efficiency" in line else []
        run_as_user(line.replace("~", str(home)), env, quick)
    assert (tmp_path / "out/outputs/label_efficiency/xrays/summary.md").is_file()
