"""The ResNet stems by name, for 2D and 3D ResNets alike, without torch (--stem's choices when parsing).

stem -> first convolution (kernel, stride, padding) and whether a 3x3 (3x3x3) stride-2 max-pool follows it:
- `imagenet`: torchvision's and the study's (a 28 px image reaches the first residual block as 7x7);
- `small`: as every SSL benchmark on 32 px images uses (SimCLR paper, appendix B.9; lightly's and solo-learn's
  CIFAR set-ups), and MedMNIST v2's 3D ResNets.
"""
STEMS = {"imagenet": ((7, 2, 3), True), "small": ((3, 1, 1), False)}
