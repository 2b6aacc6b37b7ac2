"""How much do labels buy, with and without pretraining? The study's experiment in one command.

Its options and main live in experiments/label_efficiency.py; `--help` lists them.
"""
from experiments.label_efficiency import build_parser, main  # noqa: F401  (build_parser: for --help tools and tests)
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
