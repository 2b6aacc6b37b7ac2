"""Look at an encoder's features: PCA and t-SNE scatter plots coloured by class, and a silhouette score.

Its options and main live in experiments/feature_analysis.py; `--help` lists them.
"""
from experiments.feature_analysis import build_parser, main  # noqa: F401  (build_parser: for --help tools and tests)
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
