"""The encoders that are no checkpoint of ours, by the name --encoder and --init take (no torch: the command line
lists them): raw pixels (models.pixels), torchvision's ImageNet weights (models.imagenet), a random init."""
PIXELS = "pixels"  # --encoder pixels
IMAGENET = "imagenet"  # --init imagenet, --encoder imagenet
RANDOM = "random"  # --encoder random: a randomly initialised (seeded) backbone, the no-pretraining reference
