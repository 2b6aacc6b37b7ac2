"""Evaluation: frozen features (features), the kNN monitor (knn), the linear probes (linear_probe with the AdamW head,
lbfgs_probe, probe_defaults), the classifier base and metrics both downstream stages share, what test.py needs
(open_checkpoint, report)."""
