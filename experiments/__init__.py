"""Experiments above the stages: the label-efficiency study, the hyperparameter search (tune, tuning, few_label),
the benchmark, feature analysis and the download of the study's checkpoints. Each command's parser and main live
here; scripts/ (and pretrain/feature_analysis.py) hold their entry points. Nothing below imports this package."""
