"""The backbone registry: every encoder is built here, by name, from a checkpoint's recorded options.

    backbone = build_backbone("resnet18", in_channels=1, size=28, stem="small")

A backbone maps normalised images (N, C, H, W) to features (N, backbone.feature_dim) and has
`in_channels`. Adding one is one entry in BACKBONES: a function (in_channels, size, stem) -> module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from models.resize import InputResize
from models.resnet import STEMS, ResNetEncoder
from models.small_cnn import SmallCNN
from models.stem import accepts
from models.vit import ConvStemViT
from utils import UserError


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]  # (in_channels, size, stem) -> module
    stems: tuple[str, ...] = ()  # the --stem choices, the first the default; () when it has one stem only
    fixed_size: bool = False  # position embeddings: only the image size it was built for
    about: str = ""


def _resnet(depth: str) -> Backbone:
    return Backbone(lambda in_channels, size, stem: ResNetEncoder(depth, in_channels, stem), tuple(STEMS),
                    about=f"torchvision {depth}, ImageNet stem (the study's) or small stem (3x3, no max-pool)")


def _vit(size: str) -> Backbone:
    return Backbone(lambda in_channels, image_size, stem: ConvStemViT(size, in_channels, image_size), fixed_size=True,
                    about=f"ViT-{size[0].upper()} with a convolutional stem (Xiao et al. 2021), torchvision's")


BACKBONES: dict[str, Backbone] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "small_cnn": Backbone(lambda in_channels, size, stem: SmallCNN(in_channels), about="4 conv-BN-ReLU blocks, 256 features"),
    "vit_tiny": _vit("tiny"),
    "vit_small": _vit("small"),
}
DEFAULT_BACKBONE = "resnet18"  # the study's


def default_stem(name: str) -> str | None:
    stems = BACKBONES[name].stems
    return stems[0] if stems else None


def check_stem(name: str, stem: str | None) -> str | None:
    """The stem to record for backbone `name`: its default when None; a ValueError for one it does not have."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    stems = BACKBONES[name].stems
    if stem is None:
        return default_stem(name)
    if stem not in stems:
        has = f"stems {', '.join(stems)}" if stems else "no --stem choice"
        raise ValueError(f"backbone {name} has {has}, not {stem!r}")
    return stem


def build_backbone(backbone: str = DEFAULT_BACKBONE, in_channels: int = 3, size: int = 28,
                   stem: str | None = None, resize: int | None = None) -> nn.Module:
    """The network `backbone` for images of `in_channels` channels and `size` pixels (only ViTs depend on
    it), or, with `resize`, for any image upsampled to `resize` pixels on the device first (models.resize);
    its options are kept as `module.backbone_options`, the same dict `build_backbone(**options)` takes."""
    stem = check_stem(backbone, stem)
    module = BACKBONES[backbone].build(in_channels, resize or size, stem)
    if resize:
        module.register_forward_pre_hook(InputResize(resize))
    module.backbone_options = {"backbone": backbone, "stem": stem, "in_channels": in_channels, "size": size,
                               "resize": resize}
    return module


def backbone_options(hparams: dict) -> dict:
    """The build_backbone options a checkpoint records; older ones (ours: `arch`; the study's: nothing) were
    ResNet-18s with the ImageNet stem and 3 input channels."""
    name = hparams.get("backbone") or hparams.get("arch") or DEFAULT_BACKBONE
    return {"backbone": name, "stem": hparams.get("stem") or (default_stem(name) if name in BACKBONES else None),
            "in_channels": hparams.get("in_channels", 3), "size": hparams.get("size", 28),
            "resize": hparams.get("resize")}


def reads(backbone: nn.Module, channels: int, size: int) -> bool:
    """Whether `backbone` can encode images of `channels` channels and `size` pixels."""
    options = backbone.backbone_options
    fixed = BACKBONES[options["backbone"]].fixed_size and not options.get("resize")  # a resized one reads any size
    return accepts(backbone.in_channels, channels) and (not fixed or options["size"] == size)


def require_reads(backbone: nn.Module, channels: int, size: int, what: str, fix: str) -> None:
    """A UserError naming `what` (the checkpoint) unless `backbone` reads such images."""
    if not reads(backbone, channels, size):
        options = backbone.backbone_options
        raise UserError(f"{what} takes {options['in_channels']}-channel images of {options['size']} px "
                        f"({options['backbone']}) but the dataset has {channels} channels at {size} px", fix)
