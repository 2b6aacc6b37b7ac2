"""Augmentation: the sequences by name and their strength without torch (names); the batched GPU-friendly ops and
sequences for images (image_ops, images) and volumes (volume_ops, volumes); per-sample random draws (sampling)."""
