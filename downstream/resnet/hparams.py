"""Finetuning's defaults (the study's, docs/REFERENCE.md "Downstream"), without torch: the command line's."""
BATCH_SIZE = 128  # the study's: min(128, N)
EPOCHS = 100  # ours: the study left it to the command line
LR = 1e-3  # the study's Adam learning rate
