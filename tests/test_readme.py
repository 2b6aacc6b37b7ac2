"""The README's "Published checkpoints" commands, run as written against a Zenodo-shaped local server."""
import hashlib
import os
import re
import shlex
import subprocess
import sys
import threading

import study_format
from conftest import REPO
from fakedata import write_npz
from test_download_checkpoints import Zenodo

TRAINING_SHORTCUT = ["--epochs", "1"]  # the README's training commands, shortened for a test


def readme_block(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_published_checkpoint_commands_run_as_written(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    study_format.simclr_checkpoint(study / "pretrain-bloodmnist.ckpt")
    study_format.logistic_regression_checkpoint(study / "downstream-bloodmnist-100-samples.ckpt", 8)
    study_format.resnet_checkpoint(study / "baseline-bloodmnist-100-samples.ckpt", 8)
    server = Zenodo()
    server.files = {p.name: p.read_bytes() for p in study.iterdir()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    (home / ".medmnist").mkdir(parents=True)
    write_npz(home / ".medmnist", "bloodmnist", splits=(120, 24, 24))  # the README's probe takes 100 samples
    write_npz(home / ".medmnist", "dermamnist")
    env = {**os.environ, "HOME": str(home), "MEDSIMCLR_OUTPUT_ROOT": str(tmp_path / "out")}
    try:
        for line in readme_block("Published checkpoints"):
            argv = shlex.split(line)
            assert argv[0] == "python"
            argv[0] = sys.executable
            if "download_checkpoints.py" in line:
                argv += ["--api-url", server.api]
            if "train.py" in line:
                argv += TRAINING_SHORTCUT
            result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)  # as a user: from the repo
            assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
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
