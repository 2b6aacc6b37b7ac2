"""How fast is pretraining (any method, any backbone), and how far is it from what the model alone allows?

Its options and main live in experiments/benchmark.py; `--help` lists them.
"""
from experiments.benchmark import build_parser, main  # noqa: F401  (build_parser: for --help tools and tests)
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
