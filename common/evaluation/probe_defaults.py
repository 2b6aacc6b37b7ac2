"""The linear probe's defaults (the study's, docs/REFERENCE.md "Downstream"), without torch: the command line's."""
LR = 1e-3
WEIGHT_DECAY = 1e-3
MILESTONES = (0.6, 0.8)  # fractions of max_epochs where the learning rate drops
GAMMA = 0.1
BATCH_SIZE = 64  # minibatch of the AdamW updates: min(64, N)
EPOCHS = 100  # ours: the study left it to the command line
SOLVERS = ("adamw", "lbfgs")  # the study's minibatch AdamW head; the SimCLR paper's L-BFGS (common.evaluation.lbfgs_probe)
