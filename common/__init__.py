"""The shared library the stages (pretrain/, downstream/) stand on, one concept per package: data/ (data sets and
their caches), augment/ (the views), evaluation/ (features, kNN, probes, metrics, test reports), explain/ (saliency
galleries), training/ (the Trainer, checkpoints, locks, budgets, hardware), cli/ (the command lines' options).
Dependencies point one way: utils <- models <- common <- stages <- experiments <- scripts."""
