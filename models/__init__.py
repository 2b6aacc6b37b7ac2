"""Networks: the backbone registry (models.backbones), heads (models.heads), and the one function that loads weights
into them (models.checkpoints). Nothing is imported here, so that the registry's names come without torch."""
