"""Tune a pretraining method's hyperparameters with Optuna: learning rate, weight decay, temperature (where the
method has one), augmentation sequence and strength, batch size.

Its options and main live in experiments/tune.py; `--help` lists them.
"""
from experiments.tune import build_parser, main  # noqa: F401  (build_parser: for --help tools and tests)
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
