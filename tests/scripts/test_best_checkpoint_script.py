"""Tests for scripts/replace-with-best-checkpoint.sh (run through bash with subprocess)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "replace-with-best-checkpoint.sh"


# --------------------------------------------------------------------- helpers
def run_script(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def add_ckpt(stage: Path, run: str, version: int, name: str, content: str | None = None) -> Path:
    """Create a tiny checkpoint file whose content identifies it."""
    ckpt_dir = stage / "models" / "tb_logs" / run / f"version_{version}" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / name
    path.write_text(content if content is not None else f"{run}/v{version}/{name}")
    return path


def content_of(run: str, version: int, name: str) -> str:
    return f"{run}/v{version}/{name}"


def final(stage: Path, run: str) -> Path:
    return stage / "models" / f"{run}.ckpt"


def snapshot(root: Path) -> dict[str, bytes]:
    """All files below root (relative path -> content)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftover_temp_files(stage: Path) -> list[str]:
    """Entries of models/ other than tb_logs and final <RUN>.ckpt files."""
    return sorted(
        p.name
        for p in (stage / "models").iterdir()
        if p.name != "tb_logs" and (p.name.startswith(".") or not p.name.endswith(".ckpt") or not p.is_file())
    )


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    """A stage folder with one acc run and one loss run spread over versions."""
    stage = tmp_path / "pretrain" / "simclr"
    (stage / "models").mkdir(parents=True)

    acc = "pretrain-bloodmnist"
    add_ckpt(stage, acc, 0, "epoch=3-step=120-val_acc_top5=0.7000.ckpt")
    add_ckpt(stage, acc, 0, "epoch=9-step=400-val_acc_top5=0.9000.ckpt")  # best in v0
    add_ckpt(stage, acc, 0, "last.ckpt", "LAST-v0 differs")
    add_ckpt(stage, acc, 2, "epoch=1-step=40-val_acc_top5=0.8000.ckpt")
    add_ckpt(stage, acc, 2, "epoch=7-step=320-val_acc_top5=0.9500.ckpt")  # overall best
    add_ckpt(stage, acc, 2, "last.ckpt", "LAST-v2 differs")
    add_ckpt(stage, acc, 10, "epoch=2-step=80-val_acc_top5=0.9125.ckpt")  # best in v10
    add_ckpt(stage, acc, 10, "epoch=1-step=40-val_acc_top5=0.5000.ckpt")
    add_ckpt(stage, acc, 10, "last.ckpt", "LAST-v10 differs")
    add_ckpt(stage, acc, 10, "last-v1.ckpt", "LAST-v1 differs")
    add_ckpt(stage, acc, 10, "hparams.yaml", "not a checkpoint")

    loss = "downstream-breastmnist-100-samples"
    add_ckpt(stage, loss, 1, "epoch=2-step=30-val_loss=1.2500.ckpt")
    add_ckpt(stage, loss, 1, "epoch=5-step=60-val_loss=0.4000.ckpt")  # overall best
    add_ckpt(stage, loss, 1, "last.ckpt", "LAST differs")
    add_ckpt(stage, loss, 10, "epoch=1-step=20-val_loss=0.9000.ckpt")  # best in v10
    add_ckpt(stage, loss, 10, "epoch=0-step=10-val_loss=2.0000.ckpt")
    add_ckpt(stage, loss, 2, "epoch=3-step=40-val_loss=0.4500.ckpt")
    return stage


ACC = "pretrain-bloodmnist"
LOSS = "downstream-breastmnist-100-samples"


# --------------------------------------------------------------------- basics
def test_script_is_executable() -> None:
    assert SCRIPT.is_file()
    assert SCRIPT.stat().st_mode & stat.S_IXUSR


def test_help_prints_usage() -> None:
    for flag in ("-h", "--help"):
        res = run_script(flag)
        assert res.returncode == 0, res.stderr
        assert "usage:" in res.stdout
        assert "--dry-run" in res.stdout and "--version" in res.stdout


def test_missing_stage_dir_is_usage_error() -> None:
    res = run_script()
    assert res.returncode == 2
    assert "usage:" in res.stderr


def test_unknown_option_fails(stage: Path) -> None:
    before = snapshot(stage)
    res = run_script(stage, ACC, "--frobnicate")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert snapshot(stage) == before


# --------------------------------------------------------------------- choice
def test_max_for_accuracy_metric_across_versions(stage: Path) -> None:
    res = run_script(stage, ACC)
    assert res.returncode == 0, res.stderr
    best = "epoch=7-step=320-val_acc_top5=0.9500.ckpt"
    assert final(stage, ACC).read_text() == content_of(ACC, 2, best)
    lines = res.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0] == (
        f"{ACC}: {stage}/models/tb_logs/{ACC}/version_2/checkpoints/{best} "
        f"(val_acc_top5=0.9500) -> {stage}/models/{ACC}.ckpt"
    )
    assert leftover_temp_files(stage) == []


def test_min_for_loss_metric_across_versions(stage: Path) -> None:
    res = run_script(stage, LOSS)
    assert res.returncode == 0, res.stderr
    best = "epoch=5-step=60-val_loss=0.4000.ckpt"
    assert final(stage, LOSS).read_text() == content_of(LOSS, 1, best)
    assert "(val_loss=0.4000)" in res.stdout
    assert not final(stage, ACC).exists()  # only the named run is touched


def test_version_10_sorted_numerically_after_version_2(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    # Equal metric: the later version wins, and 10 > 2 numerically (not lexically).
    add_ckpt(stage, "r", 2, "epoch=4-step=50-val_acc=0.5000.ckpt")
    add_ckpt(stage, "r", 10, "epoch=1-step=10-val_acc=0.5000.ckpt")
    add_ckpt(stage, "r", 1, "epoch=9-step=99-val_acc=0.5000.ckpt")
    res = run_script(stage, "r")
    assert res.returncode == 0, res.stderr
    assert final(stage, "r").read_text() == content_of("r", 10, "epoch=1-step=10-val_acc=0.5000.ckpt")


def test_tie_within_version_prefers_higher_step(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    add_ckpt(stage, "r", 0, "epoch=1-step=9-train_loss=0.2500.ckpt")
    add_ckpt(stage, "r", 0, "epoch=3-step=30-train_loss=0.2500.ckpt")
    add_ckpt(stage, "r", 0, "epoch=2-step=20-train_loss=0.2500.ckpt")
    res = run_script(stage, "r")
    assert res.returncode == 0, res.stderr
    assert final(stage, "r").read_text() == content_of("r", 0, "epoch=3-step=30-train_loss=0.2500.ckpt")


def test_values_compared_numerically(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    add_ckpt(stage, "acc", 0, "epoch=1-step=1-val_acc=9.5.ckpt")
    add_ckpt(stage, "acc", 0, "epoch=2-step=2-val_acc=10.25.ckpt")  # 10.25 > 9.5
    add_ckpt(stage, "loss", 0, "epoch=1-step=1-val_loss=2.0e-01.ckpt")
    add_ckpt(stage, "loss", 0, "epoch=2-step=2-val_loss=3.0e-02.ckpt")  # 0.03 < 0.2
    add_ckpt(stage, "loss", 0, "epoch=3-step=3-val_loss=0.1000.ckpt")
    res = run_script(stage)
    assert res.returncode == 0, res.stderr
    assert final(stage, "acc").read_text() == content_of("acc", 0, "epoch=2-step=2-val_acc=10.25.ckpt")
    assert final(stage, "loss").read_text() == content_of("loss", 0, "epoch=2-step=2-val_loss=3.0e-02.ckpt")


def test_last_ckpt_is_never_a_candidate(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    add_ckpt(stage, "r", 0, "epoch=0-step=5-val_acc=0.1000.ckpt")
    add_ckpt(stage, "r", 1, "last.ckpt", "LAST")
    add_ckpt(stage, "r", 1, "last-v1.ckpt", "LAST-v1")
    res = run_script(stage, "r")
    assert res.returncode == 0, res.stderr
    assert final(stage, "r").read_text() == content_of("r", 0, "epoch=0-step=5-val_acc=0.1000.ckpt")
    assert "last.ckpt" not in res.stdout and "last-v1.ckpt" not in res.stdout


def test_existing_final_model_is_replaced(stage: Path) -> None:
    final(stage, ACC).write_text("old model")
    res = run_script(stage, ACC)
    assert res.returncode == 0, res.stderr
    assert final(stage, ACC).read_text() == content_of(ACC, 2, "epoch=7-step=320-val_acc_top5=0.9500.ckpt")
    assert leftover_temp_files(stage) == []


# --------------------------------------------------------------------- options
def test_dry_run_changes_nothing(stage: Path) -> None:
    final(stage, ACC).write_text("old model")
    before = snapshot(stage)
    res = run_script("--dry-run", stage, ACC)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"would replace: {ACC}: ")
    assert "epoch=7-step=320-val_acc_top5=0.9500.ckpt" in res.stdout
    assert snapshot(stage) == before


def test_dry_run_all_runs_changes_nothing(stage: Path) -> None:
    before = snapshot(stage)
    res = run_script(stage, "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("would replace: ") for line in lines)
    assert snapshot(stage) == before


def test_version_restricts_choice(stage: Path) -> None:
    res = run_script(stage, "--version", "10", ACC)
    assert res.returncode == 0, res.stderr
    assert final(stage, ACC).read_text() == content_of(ACC, 10, "epoch=2-step=80-val_acc_top5=0.9125.ckpt")
    assert "/version_10/" in res.stdout

    res = run_script("--version", "0", stage, ACC)
    assert res.returncode == 0, res.stderr
    assert final(stage, ACC).read_text() == content_of(ACC, 0, "epoch=9-step=400-val_acc_top5=0.9000.ckpt")

    res = run_script(stage, LOSS, "--version", "10")
    assert res.returncode == 0, res.stderr
    assert final(stage, LOSS).read_text() == content_of(LOSS, 10, "epoch=1-step=20-val_loss=0.9000.ckpt")


def test_missing_version_fails(stage: Path) -> None:
    before = snapshot(stage)
    res = run_script(stage, ACC, "--version", "7")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert snapshot(stage) == before


def test_all_runs_when_run_omitted(stage: Path) -> None:
    res = run_script(stage)
    assert res.returncode == 0, res.stderr
    assert final(stage, ACC).read_text() == content_of(ACC, 2, "epoch=7-step=320-val_acc_top5=0.9500.ckpt")
    assert final(stage, LOSS).read_text() == content_of(LOSS, 1, "epoch=5-step=60-val_loss=0.4000.ckpt")
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert {line.split(": ", 1)[0] for line in lines} == {ACC, LOSS}
    assert all(line.endswith(".ckpt") and " -> " in line for line in lines)
    assert leftover_temp_files(stage) == []


def test_works_from_other_directory_with_relative_stage(stage: Path, tmp_path: Path) -> None:
    res = run_script("pretrain/simclr/", ACC, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert final(stage, ACC).read_text() == content_of(ACC, 2, "epoch=7-step=320-val_acc_top5=0.9500.ckpt")
    assert "-> pretrain/simclr/models/" + ACC + ".ckpt" in res.stdout


# --------------------------------------------------------------------- errors
def test_fails_when_no_checkpoint_matches(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    add_ckpt(stage, "r", 0, "last.ckpt", "LAST")
    add_ckpt(stage, "r", 0, "epoch=3-step=40.ckpt", "no metric")
    final(stage, "r").write_text("old model")
    before = snapshot(stage)
    res = run_script(stage, "r")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert snapshot(stage) == before


def test_a_run_that_keeps_its_last_checkpoint_is_said_so(tmp_path: Path) -> None:
    stage = tmp_path / "pretrain" / "moco"  # MoCo monitors no metric: it saves only last.ckpt
    add_ckpt(stage, "moco-bloodmnist", 0, "last.ckpt", "LAST")
    final(stage, "moco-bloodmnist").write_text("LAST")
    before = snapshot(stage)
    res = run_script(stage, "moco-bloodmnist")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "saved only last.ckpt" in res.stderr and "is its last epoch already" in res.stderr
    assert snapshot(stage) == before


def test_fails_for_missing_run(stage: Path) -> None:
    before = snapshot(stage)
    res = run_script(stage, "no-such-run")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert "no-such-run" in res.stderr
    assert snapshot(stage) == before


def test_fails_without_tb_logs(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "models").mkdir(parents=True)
    for args in ((stage,), (stage, "r")):
        res = run_script(*args)
        assert res.returncode == 1
        assert res.stderr.startswith("error: ")
    assert sorted(os.listdir(stage / "models")) == []


def test_fails_on_mixed_metrics(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    add_ckpt(stage, "r", 0, "epoch=1-step=10-val_acc=0.5000.ckpt")
    add_ckpt(stage, "r", 1, "epoch=1-step=10-val_loss=0.5000.ckpt")
    before = snapshot(stage)
    res = run_script(stage, "r")
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert "val_acc" in res.stderr and "val_loss" in res.stderr
    assert snapshot(stage) == before


def test_error_in_one_run_changes_no_run(stage: Path) -> None:
    (stage / "models" / "tb_logs" / "broken" / "version_0" / "checkpoints").mkdir(parents=True)
    before = snapshot(stage)
    res = run_script(stage)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ")
    assert "broken" in res.stderr
    assert snapshot(stage) == before
