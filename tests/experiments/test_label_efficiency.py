"""scripts/label_efficiency.py: every cell run and tested, resumable after a kill, its summary and plot."""
import statistics
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from pretrain.simclr import train as simclr_train
from experiments import label_efficiency
from experiments.label_efficiency_report import plot, read_rows, summary_markdown
from utils import models_dir, run_cli

ARGS = ["--dataset", "breastmnist", "--labels", "5", "all", "--seeds", "0", "1", "--probe-epochs", "3", "--references", "random", "pixels",
        "--finetune-epochs", "1"]


@pytest.fixture(scope="module")
def encoder(data_dir, tmp_path_factory):
    """A 1-epoch SimCLR run with the small CNN, in a root of its own."""
    root = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(root))
        simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size",
                           "16", "--backbone", "small_cnn"])
    return root


@pytest.fixture
def out(encoder, monkeypatch):
    monkeypatch.setenv("MEDSIMCLR_OUTPUT_ROOT", str(encoder))
    return encoder


def test_every_cell_runs_once_a_killed_run_finishes_only_what_is_missing_and_a_failed_cell_is_retried(
        out, data_dir, tmp_path, monkeypatch, capsys):
    argv = [*ARGS, "--data-dir", str(data_dir), "--out", str(tmp_path / "results")]
    real_run, calls = label_efficiency.Runner.run, []

    def killed_after_five(self, cell):
        if len(calls) == 5:
            raise KeyboardInterrupt  # as a kill would stop it, between cells or inside one
        calls.append(cell.key)
        return real_run(self, cell)

    monkeypatch.setattr(label_efficiency.Runner, "run", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        label_efficiency.main(argv)
    assert len(read_rows(tmp_path / "results/results.csv")) == 5

    def first_fails(self, cell):  # the rerun: its first cell fails, the others go on
        calls.append(cell.key)
        if len(calls) == 6:
            raise RuntimeError("out of memory\nmore detail")
        return real_run(self, cell)

    monkeypatch.setattr(label_efficiency.Runner, "run", first_fails)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(label_efficiency.main, argv)
    output = capsys.readouterr()
    assert "20 cells, 5 already in" in output.out and exit_info.value.code != 0
    assert "error: cell le-breastmnist-" in output.err and "failed: out of memory\n" in output.err
    assert "1 of 15 cells failed" in output.err
    assert len(read_rows(tmp_path / "results/results.csv")) == 19 and (tmp_path / "results/summary.md").is_file()

    monkeypatch.setattr(label_efficiency.Runner, "run", lambda self, cell: calls.append(cell.key) or real_run(self, cell))
    label_efficiency.main(argv)  # the third run retries the failed cell alone
    assert "20 cells, 19 already in" in capsys.readouterr().out
    assert calls[-1] == calls[5]
    calls.pop(5)
    rows = read_rows(tmp_path / "results/results.csv")
    keys = [label_efficiency.row_key(r) for r in rows]
    assert len(calls) == 20 and len(set(calls)) == 20 and sorted(keys) == sorted(calls)  # each cell ran once
    assert {(r["protocol"], r["encoder"]) for r in rows} == {
        ("probe", "pretrain-breastmnist"), ("probe", "random-small_cnn"), ("probe", "pixels"),
        ("finetune", "pretrain-breastmnist"), ("baseline", "scratch-small_cnn")}
    assert {r["labelled_images"] for r in rows} == {"10", "48"}  # 5 per class of 2, and all 48
    for row in rows:  # every cell's checkpoint is in its stage's folder, tested by the stage's own test.py format
        assert row["checkpoint"].endswith(".ckpt") and 0 <= float(row["test_auroc"]) <= 1
        stage = "logistic_regression" if row["protocol"] == "probe" else "resnet"
        assert str(models_dir(stage)) in row["checkpoint"]
    assert (tmp_path / "results/summary.md").is_file()
    assert mpimg.imread(tmp_path / "results/label_efficiency.png").ndim == 3  # a valid PNG
    # other settings are other cells, with checkpoints of their own: the AdamW probe reuses no L-BFGS row
    label_efficiency.main([*argv, "--protocols", "probe", "--labels", "5", "--seeds", "0", "--probe-solver", "adamw",
                           "--probe-epochs", "4", "--references", "pixels"])
    assert "2 cells, 0 already in" in capsys.readouterr().out  # the encoder's and the raw pixels'
    rows = read_rows(tmp_path / "results/results.csv")
    assert len(rows) == 22 and "4 epochs" in rows[-1]["settings"] and "L-BFGS" in rows[0]["settings"]
    assert [row["encoder"] for row in rows[-2:]] == ["pretrain-breastmnist", "pixels"]
    assert len({row["checkpoint"] for row in rows}) == 22 and all(Path(row["checkpoint"]).is_file() for row in rows)


ROWS = [{"protocol": p, "encoder": e, "labels": b, "labelled_images": n, "seed": str(s), "test_acc": str(acc),
         "test_auroc": str(auc)}
        for p, e in (("probe", "enc"), ("baseline", "scratch"))
        for b, n in (("10/class", "20"), ("all", "546"))
        for s, acc, auc in ((0, 0.5 + 0.1 * len(p), 0.61), (1, 0.52, 0.7), (2, 0.56 + 0.01 * len(b), 0.9))]


def test_summary_is_the_mean_and_standard_deviation_over_seeds():
    text = summary_markdown(ROWS, ["10/class", "all"], "t")
    for (protocol, encoder) in (("probe", "enc"), ("baseline", "scratch")):
        line = next(row for row in text.split("## Test accuracy")[1].splitlines() if row.startswith(f"| {protocol} |"))
        for budget, cell in zip(("10/class", "all"), line.strip("| ").split(" | ")[2:]):
            values = [float(r["test_acc"]) for r in ROWS if r["protocol"] == protocol and r["labels"] == budget]
            assert cell == f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (n=3)"


def test_plot_has_a_line_per_protocol_and_encoder_against_labelled_images():
    fig = plot(ROWS, ["10/class", "all"], "t")
    for ax in fig.axes:
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["probe: enc", "baseline: scratch"]
        assert all(list(line.get_xdata()) == [20.0, 546.0] for line in lines) and ax.get_xscale() == "log"
    auroc = fig.axes[0].get_lines()[0].get_ydata()
    assert list(auroc) == pytest.approx([statistics.mean([0.61, 0.7, 0.9])] * 2)


@pytest.mark.parametrize("labels, expected", [(["0"], "must be a positive number"), (["-3"], "must be a positive"),
                                              (["30"], "class 0 has only")])
def test_a_bad_budget_is_a_one_line_error_before_anything_trains(labels, expected, out, data_dir, tmp_path, capsys):
    before = sorted(out.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(label_efficiency.main, ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--labels", *labels,
                                        "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "results").exists() and sorted(out.rglob("*")) == before  # nothing trained or written


def test_a_cell_past_its_timeout_is_recorded_skipped_by_reruns_and_retried_on_request(out, data_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    import time

    argv = ["--dataset", "breastmnist", "--labels", "5", "--seeds", "0", "--protocols", "probe", "--references",
            "pixels", "--data-dir", str(data_dir), "--out", str(tmp_path / "results")]
    real_run = label_efficiency.Runner.run

    def pixels_hang(self, cell):
        if cell.encoder.tag == "pixels":
            time.sleep(120)  # a cell that would run far past its limit
        return real_run(self, cell)

    monkeypatch.setattr(label_efficiency.Runner, "run", pixels_hang)
    label_efficiency.main([*argv, "--cell-timeout", "20"])  # the pretrained encoder's cell takes a few seconds
    output = capsys.readouterr()
    assert "cell le-breastmnist-probe-pixels" in output.err and "past --cell-timeout 20 s" in output.err
    assert "1 cells timed out" in output.out
    assert [r["encoder"] for r in read_rows(tmp_path / "results/results.csv")] == ["pretrain-breastmnist"]
    assert [r["encoder"] for r in read_rows(tmp_path / "results/timed_out.csv")] == ["pixels"]
    label_efficiency.main(argv)  # a rerun skips it
    assert "or timed out before" in capsys.readouterr().out
    monkeypatch.setattr(label_efficiency.Runner, "run", real_run)
    label_efficiency.main([*argv, "--retry-timed-out"])
    assert sorted(r["encoder"] for r in read_rows(tmp_path / "results/results.csv")) == ["pixels", "pretrain-breastmnist"]
