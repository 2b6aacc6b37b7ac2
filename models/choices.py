"""What the command line may name of models/, without torch (it lists them when parsing; the networks import them
too): the ResNet stems, the ViT sizes, and the encoders that are no checkpoint of ours.

STEMS: stem -> first convolution (kernel, stride, padding) and whether a 3x3 (3x3x3) stride-2 max-pool follows
it, for 2D and 3D ResNets alike:
- `imagenet`: torchvision's and the study's (a 28 px image reaches the first residual block as 7x7);
- `small`: as every SSL benchmark on 32 px images uses (SimCLR paper, appendix B.9; lightly's and solo-learn's
  CIFAR set-ups), and MedMNIST v2's 3D ResNets.

VIT_SIZES: DeiT's Tiny and Small sizes (Touvron et al. 2021), less one block for the conv stem (Xiao et al.); the
backbone registry counts their blocks for --features stage:K.

PIXELS, IMAGENET, RANDOM: --encoder and --init values: raw pixels (models.pixels), torchvision's ImageNet weights
(models.imagenet), a random init.
"""
STEMS = {"imagenet": ((7, 2, 3), True), "small": ((3, 1, 1), False)}

VIT_SIZES = {
    "tiny": dict(hidden_dim=192, num_heads=3, mlp_dim=768, num_layers=11),
    "small": dict(hidden_dim=384, num_heads=6, mlp_dim=1536, num_layers=11),
}

PIXELS = "pixels"  # --encoder pixels
IMAGENET = "imagenet"  # --init imagenet, --encoder imagenet
RANDOM = "random"  # --encoder random: a randomly initialised (seeded) backbone, the no-pretraining reference
