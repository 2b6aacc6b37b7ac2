"""The command line: answers before the heavy imports, checks every option as it parses it, and reads
configuration files (--config, --print-config), including the config.json a run wrote."""
import argparse
import importlib
import json
import subprocess
import sys
import pytest

from common.cli.parsers import COMMAND_ONLY, Number
from conftest import REPO
from helpers.events import scalar_values
from utils import models_dir

TRAIN_COMMANDS = ["pretrain/simclr/train.py", "pretrain/moco/train.py", "pretrain/byol/train.py",
                  "downstream/logistic_regression/train.py", "downstream/resnet/train.py"]
LIGHT_COMMANDS = TRAIN_COMMANDS + ["scripts/tune.py"]


def commands() -> list[str]:
    """Every command of the repository: each file that ends in run_cli(main)."""
    found = []
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith((".venv/", "tests/")) or "/." in relative:
            continue
        if "run_cli(main)" in path.read_text():
            found.append(relative)
    return found


def module(script: str):
    return importlib.import_module(script.removesuffix(".py").replace("/", "."))


def test_every_command_exposes_its_parser():
    found = commands()
    assert set(TRAIN_COMMANDS) | {"scripts/tune.py", "scripts/benchmark.py", "pretrain/test.py"} <= set(found)
    for script in found:
        assert hasattr(module(script), "build_parser"), f"{script} has no build_parser()"


PROBE = """
import runpy, sys
results = []
for script, argv in {cases!r}:
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code
    results.append((script, argv, code))
print(repr((results, sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "pytorch_lightning"))))))
"""


def test_help_print_config_and_option_errors_answer_without_importing_torch(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("temprature: 0.1\n")
    cases = [("pretrain/simclr/train.py", ["--config", str(typo)])]
    for script in LIGHT_COMMANDS:
        cases += [(script, ["--help"]), (script, ["--dataset", "bloodmnst"]), (script, ["--size", "32"]),
                  (script, ["--epochs" if script != "scripts/tune.py" else "--trials", "0"])]
    for script in TRAIN_COMMANDS:
        cases += [(script, ["--dataset", "breastmnist", "--print-config"]), (script, ["--lr", "-1"])]
    done = subprocess.run([sys.executable, "-c", PROBE.format(cases=cases)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    results, heavy = eval(done.stdout.strip().splitlines()[-1])
    assert heavy == [], heavy  # nothing of torch or Lightning was imported by any of them
    for script, argv, code in results:
        assert code == (0 if argv[-1] in ("--help", "--print-config") else 2), (script, argv, code)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == sum(1 for r in results if r[2] == 2)  # one line each
    assert any("did you mean breastmnist" in line or "did you mean bloodmnist" in line for line in errors)
    assert any("unsupported size 32" in line for line in errors)
    assert any("unknown option 'temprature' (did you mean 'temperature'?)" in line for line in errors)


def out_of_range_cases():
    for script in commands():
        parser = module(script).build_parser()
        required = [w for a in parser._actions if a.required for w in (a.option_strings[0], "x")]
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            if hasattr(action.type, "outside"):
                for value in action.type.outside():
                    yield pytest.param(script, action, value, required, id=f"{script}:{action.dest}={value}")
            elif action.choices is not None and action.nargs is None:
                yield pytest.param(script, action, "not-a-choice", required, id=f"{script}:{action.dest}:choice")
            elif action.type in (int, float):
                yield pytest.param(script, action, None, required, id=f"{script}:{action.dest}:unranged")


@pytest.mark.parametrize("script, action, value, required", list(out_of_range_cases()))
def test_every_numeric_option_has_a_range_and_refuses_values_outside_it(script, action, value, required, capsys,
                                                                       output_root):
    assert value is not None, f"{action.option_strings[0]} of {script} is a bare {action.type.__name__}: use a Number"
    parser = module(script).build_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([*required, action.option_strings[0], value])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert action.option_strings[0] in lines[0] or action.dest in lines[0], lines[0]
    assert not output_root.exists()


def test_number_type_says_its_range():
    assert Number(float, 0, 10, open_low=True).describe() == "a number in (0, 10]"
    assert Number(int, 1)("3") == 3 and Number(float, 0, 1, open_high=True)("0") == 0.0
    for bad in ("0", "-2", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            Number(int, 1)(bad)


def simclr_parser():
    from pretrain.cli import pretrain_parser
    from pretrain.simclr.hparams import SimCLRHparams

    return pretrain_parser(SimCLRHparams)


def test_config_file_is_under_the_command_line(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("dataset: breastmnist\nlr: 0.002\nepochs: 7\nbatch-size: 32\naug: natural\n"
                         "sync_batchnorm: false\nresume: true\n")
    args = simclr_parser().parse_args(["--config", str(yaml_file), "--epochs", "3"])
    assert (args.dataset, args.lr, args.epochs, args.batch_size, args.aug) == ("breastmnist", 0.002, 3, 32, "natural")
    assert args.resume is False  # --resume and --overwrite come from the command line only
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"temperature": 0.2, "backbone": "small_cnn"}))
    args = simclr_parser().parse_args(["--config", str(json_file)])
    assert (args.temperature, args.backbone, args.lr) == (0.2, "small_cnn", None)


@pytest.mark.parametrize("content, expected", [
    ("temprature: 0.1\n", "unknown option 'temprature' (did you mean 'temperature'?)"),
    ("lr: -1\n", "argument --lr: must be a number in (0, 10]"),
    ("aug: fancy\n", "argument --aug: invalid choice"),
    ("compile: 3\n", "compile must be true or false"),
    ("- a list\n", "expected a mapping"),
    ("lr: [1\n", "not valid YAML"),
])
def test_config_file_mistakes_are_one_line_errors_naming_the_file(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        simclr_parser().parse_args(["--config", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and expected in lines[0] and "bad.yaml" in lines[0], lines


def test_print_config_prints_yaml_that_config_reads_back(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        simclr_parser().parse_args(["--dataset", "breastmnist", "--lr", "0.003", "--backbone", "small_cnn",
                                    "--print-config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    again = simclr_parser().parse_args(["--config", str(tmp_path / "printed.yaml")])
    assert (again.dataset, again.lr, again.backbone) == ("breastmnist", 0.003, "small_cnn")
    assert "print_config" not in printed and "config:" not in printed


def test_saved_config_reruns_each_train_command_and_pretraining_repeats_its_losses(data_dir, output_root):
    """Every train command's saved config.json is taken as is; pretraining reruns it under a new name with the same
    losses (CPU, same seed)."""
    from downstream.logistic_regression import train as lr_train
    from downstream.resnet import train as ft_train
    from pretrain.simclr import train as simclr_train

    common = ["--dataset", "breastmnist", "--data-dir", str(data_dir), "--accelerator", "cpu"]
    first = simclr_train.main([*common, "--backbone", "small_cnn", "--epochs", "2", "--batch-size", "16",
                               "--lr", "0.002", "--aug-strength", "0.5", "--name", "original"])
    saved = first.with_suffix(".config.json")
    second = simclr_train.main(["--config", str(saved), "--name", "rerun"])
    losses = [scalar_values(models_dir("simclr") / "tb_logs" / name) for name in ("original", "rerun")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-6)  # per epoch
    record = json.loads(second.with_suffix(".config.json").read_text())
    assert record["options"]["aug_strength"] == 0.5 and record["network"]["backbone"] == "small_cnn"
    probe = lr_train.main([*common, "--encoder", "original", "--epochs", "2", "--lr", "0.01", "--name", "probe"])
    finetuned = ft_train.main([*common, "--init", "none", "--backbone", "small_cnn", "--epochs", "1", "--name", "ft"])
    for script, run in ((lr_train, probe), (ft_train, finetuned)):
        options = json.loads(run.with_suffix(".config.json").read_text())["options"]
        again = vars(script.build_parser().parse_args(["--config", str(run.with_suffix(".config.json"))]))
        assert {k: v for k, v in again.items() if k not in COMMAND_ONLY} == \
               {k: v for k, v in options.items() if k not in COMMAND_ONLY}
    assert json.loads(finetuned.with_suffix(".config.json").read_text())["options"]["init"] == "none"
