"""Supervised ImageNet weights, the third starting point for transfer (beside random init and self-supervised).

`--init imagenet` (finetuning) and `--encoder imagenet` (the probe) take torchvision's ImageNet-1k weights of a
ResNet through torchvision's own weights API, which keeps them in its cache under $TORCH_HOME
(~/.cache/torch/hub/checkpoints/). Adapted as our checkpoints are: the classifier dropped, and for grey data the
first convolution's kernel summed over its three input channels (which equals feeding the grey image as RGB).
Inputs keep every stage's normalisation ([-1, 1]), not ImageNet's mean and std: finetuning adapts to it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from models.backbones import build_backbone
from models.checkpoints import load_weights
from models.choices import IMAGENET
from utils import UserError

WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}


def imagenet_weights(backbone: str):
    """torchvision's ImageNet-1k weights enum entry for `backbone` (the original release, as the study's ResNets)."""
    if backbone not in WEIGHTS:
        raise UserError(f"torchvision has no ImageNet weights for {backbone}",
                        f"use --backbone {', '.join(WEIGHTS)} with {IMAGENET}")
    return getattr(torchvision.models, WEIGHTS[backbone]).IMAGENET1K_V1


def cached_path(weights) -> Path:
    """Where torchvision keeps (or would download) the weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def imagenet_encoder(backbone: str | None, in_channels: int, size: int, stem: str | None = None,
                     resize: int | None = None, dims: int = 2) -> nn.Module:
    """A ResNet encoder (default resnet18, ImageNet stem) with torchvision's ImageNet weights for images of
    `in_channels` channels; a one-line error naming the file to fetch when it is not cached and cannot be
    downloaded."""
    if dims != 2:
        raise UserError(f"{IMAGENET}: torchvision's ImageNet weights are for 2D images, the data set holds volumes",
                        "start from a random init or a pretrained 3D encoder")
    backbone = backbone or "resnet18"
    weights = imagenet_weights(backbone)
    if stem not in (None, "imagenet"):
        raise UserError(f"--stem {stem}: ImageNet weights come with the imagenet stem (7x7 stride 2 + max-pool)",
                        "leave --stem out")
    path = cached_path(weights)
    try:
        state = weights.get_state_dict(progress=False)  # torchvision reads its cache, or downloads into it
    except Exception as err:  # no network (URLError), a truncated file (RuntimeError), ...
        raise UserError(f"ImageNet weights for {backbone} are not in {path} and could not be downloaded "
                        f"({type(err).__name__})", f"download {weights.url} and put it at {path}") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if in_channels == 1:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    encoder = build_backbone(backbone, in_channels, size, "imagenet", resize)
    load_weights(encoder, state, f"torchvision's {backbone} ImageNet weights ({path.name})")
    return encoder
