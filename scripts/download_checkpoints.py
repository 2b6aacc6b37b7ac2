"""Download the study's published checkpoints from Zenodo and file each into its stage's models/ folder.

Its options and main live in experiments/download_checkpoints.py; `--help` lists them.
"""
from experiments.download_checkpoints import build_parser, main  # noqa: F401  (build_parser: for --help tools and tests)
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
