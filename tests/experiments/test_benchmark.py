"""Smoke test of scripts/benchmark.py on tiny generated data: every section runs and reports sane numbers.

No timing is asserted: these machines are shared, and a benchmark's numbers are for people to read.
"""
from __future__ import annotations

import json
import math

import medmnist
import pytest

from common.data.synthetic import write_synthetic
from common.data.datamodule import MedMNISTDataModule
from conftest import REPO
from experiments import benchmark
from pretrain import METHODS
from utils import UserError

SECTIONS = ("compute", "pretrain", "monitor", "augment", "logreg", "memory")


def numbers(tree, path=""):
    """(path, value) of every number in a nested dict."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}/{key}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_every_section_runs_and_reports_positive_numbers(data_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    returned = benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--batch-size", "8",
                               "--steps", "2", "--warmup", "1", "--lr-epochs", "2", "--json", str(out),
                               "--threads", "1"])  # one thread: quicker on a shared CI machine
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert set(SECTIONS) <= set(results)
    assert not results["settings"]["synthetic"] and results["settings"]["batch_size"] == 8
    assert set(results["augment"]) == {"natural", "simple", "novel", "greyscale"}
    for section in SECTIONS:
        found = dict(numbers(results[section]))
        assert found, section
        for path, value in found.items():
            if path.endswith(("test_acc", "test_auroc")):
                assert 0 <= value <= 1, (section, path, value)
            else:
                assert math.isfinite(value) and value > 0, (section, path, value)
    assert results["compute"]["steps"] == results["pretrain"]["steps"] == 2
    assert results["pretrain"]["ratio_to_compute"] > 0
    assert results["logreg"]["train_updates"] == 2  # 2 epochs of one batch: min(64, 48 images)
    assert results["machine"]["torch_threads"] == 1
    # the table: a header line, one row per measurement, the synthetic warning absent for real files
    assert "section" in printed and "measurement" in printed and "images/s" in printed
    for label in ("1 compute-only", "2 real pretraining", "3 augmentation", "4 logistic regression", "5 memory"):
        assert label in printed
    assert "SYNTHETIC" not in printed


def test_skip_leaves_sections_out(data_dir, capsys):
    results = benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--batch-size", "4",
                              "--steps", "1", "--warmup", "0", "--skip", "compute", "pretrain", "logreg"])
    assert "compute" not in results and "pretrain" not in results and "logreg" not in results
    assert set(results["augment"]) == {"natural", "simple", "novel", "greyscale"}
    assert "5 memory" in capsys.readouterr().out


def test_a_folder_of_scans_is_benchmarked_as_the_stages_read_it(tmp_path, output_root, capsys):
    from helpers import scans
    folder = scans.png_class_folders(tmp_path / "pngs", n=24)
    results = benchmark.main(["--dataset", str(folder), "--batch-size", "4", "--steps", "1", "--warmup", "0",
                              "--skip", "compute", "pretrain", "monitor", "memory", "--lr-epochs", "1"])
    printed = capsys.readouterr().out
    assert "cached 24 images" in printed and "SYNTHETIC" not in printed and not results["settings"]["synthetic"]
    assert 0 <= results["logreg"]["test_acc"] <= 1 and results["loader"]["images_per_s"] > 0
    with pytest.raises(UserError, match="stand in for a MedMNIST flag"):
        benchmark.main(["--dataset", str(folder), "--synthetic", "--skip", *benchmark.SECTIONS])


def test_synthetic_data_has_the_real_split_sizes(tmp_path):
    path = write_synthetic(tmp_path, "breastmnist", 28)
    data = MedMNISTDataModule("breastmnist", 28, path.parent, download=False).load()
    for split, (images, labels) in data.splits.items():
        assert images.shape == (medmnist.INFO["breastmnist"]["n_samples"][split], 1, 28, 28)
        assert len(labels) == len(images) and set(labels.tolist()) <= {0, 1}


def test_missing_file_falls_back_to_synthetic_data(tmp_path, capsys):
    results = benchmark.main(["--dataset", "breastmnist", "--data-dir", str(tmp_path), "--batch-size", "4",
                              "--steps", "1", "--warmup", "0", "--skip", "compute", "pretrain", "logreg"])
    assert results["settings"]["synthetic"] and results["settings"]["data_file"] is None
    assert "SYNTHETIC DATA" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # generated in a temporary folder, removed afterwards


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_half_precision_is_refused_on_the_cpu(data_dir, precision):
    with pytest.raises(UserError, match="32-true"):
        benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--accelerator", "cpu",
                        "--precision", precision])


def test_batch_larger_than_the_training_split_is_refused(data_dir):
    with pytest.raises(UserError, match="48 training images"):
        benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--batch-size", "64",
                        "--skip", "compute", "pretrain", "augment", "logreg"])


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_is_measured_against_its_own_compute_only_limit(method, data_dir, capsys):
    results = benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--batch-size", "8",
                              "--steps", "2", "--warmup", "1", "--method", method, "--backbone", "small_cnn",
                              "--skip", "augment", "logreg", "--threads", "1"])
    assert results["settings"]["method"] == method and results["settings"]["backbone"] == "small_cnn"
    assert results["settings"]["stem"] is None
    assert results["compute"]["images_per_s"] > 0 and results["pretrain"]["ratio_to_compute"] > 0
    assert f"{method} benchmark" in capsys.readouterr().out


def test_the_stem_is_recorded_and_checked(data_dir):
    results = benchmark.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--batch-size", "4",
                              "--steps", "1", "--warmup", "0", "--stem", "small", "--skip", "pretrain", "augment",
                              "logreg", "--threads", "1"])
    assert results["settings"]["stem"] == "small" and results["compute"]["images_per_s"] > 0
    with pytest.raises(UserError, match="no --stem choice"):
        benchmark.main(["--backbone", "small_cnn", "--stem", "small"])


def test_large_set_mode_generates_a_set_reads_it_through_the_cache_and_reports_memory(tmp_path):
    """--large-set writes the npz (streamed), decodes it into the memory-mapped cache and runs the compute-only and
    real paths on it; the sections that encode every image are skipped."""
    folder = tmp_path / "large"
    results = benchmark.main(["--large-set", "40", "--large-dir", str(folder), "--batch-size", "8", "--steps", "2",
                              "--warmup", "1", "--backbone", "small_cnn", "--threads", "1", "--skip", "augment"])
    large = results["large_set"]
    assert large["images"] == 48 and large["train_images"] == 40 and large["images_bytes"] >= 48 * 28 * 28
    assert (folder / "pneumoniamnist.cache" / "manifest.json").is_file()
    assert results["settings"]["data_storage"] == "mmap" and "monitor" not in results and "logreg" not in results
    assert results["pretrain"]["ratio_to_compute"] > 0 and results["memory"]["peak_rss_mb"] > 0
    assert large["load_seconds"] > 0 and large["generate_seconds"] > 0 and large["peak_rss_after_load_mb"] > 0


def test_the_gpu_check_script_runs_its_plumbing_on_the_cpu_and_prints_one_table(data_dir, tmp_path):
    """scripts/gpu_check.sh is for a CUDA machine; with ACCELERATOR=cpu it runs the same steps (one method, fp32,
    no compile, one stage) so that its loops, files and table are tested here."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATOR": "cpu", "METHODS": "simclr", "PRECISIONS": "32-true", "COMPILE": "0",
           "STAGES": "pretrain", "DATASET": "breastmnist", "DATA_DIR": str(data_dir), "BATCH": "8", "STEPS": "2",
           "WARMUP": "1", "OUT": str(tmp_path / "check"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    script = str(REPO / "scripts" / "gpu_check.sh")
    subprocess.run(["bash", "-n", script], check=True)
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("method"):]
    row = next(line.split() for line in table.splitlines() if line.startswith("simclr"))
    assert row[:3] == ["simclr", "32-true", "no"] and float(row[5]) > 0  # the real path's ratio to compute-only
    assert "stage pretrain-simclr" in table and " ok " in table
    assert (tmp_path / "check" / "bench" / "simclr-32-true-compile0.json").is_file()
