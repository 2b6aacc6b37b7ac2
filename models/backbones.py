"""The backbone registry: every encoder is built here, by name, from a checkpoint's recorded options.

    backbone = build_backbone("resnet18", in_channels=1, size=28, stem="small")

A backbone maps normalised images (N, C, H, W), or volumes (N, C, D, H, W) for a 3D backbone (`dims=3`), to
features (N, backbone.feature_dim) and has `in_channels`; `stage_outputs(x)` gives each stage's output and
`stage_widths` their channels (models.stages reads them for --features). Adding one is one entry in BACKBONES: a function
(in_channels, size, stem) -> module, which imports its network when called: the registry itself imports no torch,
so the command line lists and checks backbones before the heavy imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from models.choices import STEMS
from utils import UserError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]  # (in_channels, size, stem) -> module
    stems: tuple[str, ...] = ()  # the --stem choices, the first the default; () when it has one stem only
    fixed_size: bool = False  # position embeddings: only the image size it was built for
    about: str = ""
    dims: int = 2  # spatial dimensions of its input: 2 (images) or 3 (volumes)
    patch_topk: bool = False  # takes --patch-topk K (models.topk_pool): ViTs
    stages: int = 4  # what --features stage:K counts (models.feature_choice): ResNets' layers, the small CNN's blocks


def _resnet(depth: str) -> Backbone:
    def build(in_channels, size, stem):
        from models.resnet import ResNetEncoder
        return ResNetEncoder(depth, in_channels, stem)

    return Backbone(build, tuple(STEMS),
                    about=f"torchvision {depth}, ImageNet stem (the study's) or small stem (3x3, no max-pool)")


def _vit(size: str) -> Backbone:
    def build(in_channels, image_size, stem, patch_topk=None):
        from models.vit import ConvStemViT
        return ConvStemViT(size, in_channels, image_size, patch_topk)

    from models.choices import VIT_SIZES  # no torch

    return Backbone(build, fixed_size=True, patch_topk=True, stages=VIT_SIZES[size]["num_layers"],
                    about=f"ViT-{size[0].upper()} with a convolutional stem (Xiao et al. 2021), torchvision's; "
                          "--patch-topk K: the top-K patch head")


def _resnet3d(depth: str) -> Backbone:
    def build(in_channels, size, stem):
        from models.resnet3d import ResNet3DEncoder
        return ResNet3DEncoder(depth, in_channels, stem)

    return Backbone(build, tuple(STEMS), dims=3,
                    about=f"torchvision's 3D ResNet ({depth[:-3]}, 3x3x3 convolutions), isotropic ImageNet-like stem "
                          "(7^3 stride 2 + max-pool) or small stem (3^3 stride 1)")


def _small_cnn(in_channels: int, dims: int):
    from models.small_cnn import SmallCNN
    return SmallCNN(in_channels, dims=dims)


BACKBONES: dict[str, Backbone] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "small_cnn": Backbone(lambda in_channels, size, stem: _small_cnn(in_channels, 2),
                          about="4 conv-BN-ReLU blocks, 256 features"),
    "vit_tiny": _vit("tiny"),
    "vit_small": _vit("small"),
    "resnet18_3d": _resnet3d("resnet18_3d"),
    "resnet50_3d": _resnet3d("resnet50_3d"),
    "small_cnn_3d": Backbone(lambda in_channels, size, stem: _small_cnn(in_channels, 3), dims=3,
                             about="the small CNN with 3x3x3 convolutions, 256 features"),
}
DEFAULT_BACKBONE = "resnet18"  # the study's
DEFAULT_BACKBONE_3D = "resnet18_3d"  # MedMNIST v2's 3D baseline is a ResNet-18


def default_backbone(dims: int = 2) -> str:
    """The backbone a new run builds when --backbone is not given, for images (2) or volumes (3)."""
    return DEFAULT_BACKBONE_3D if dims == 3 else DEFAULT_BACKBONE


def backbone_dims(module: nn.Module) -> int:
    """2 or 3: the spatial dimensions a network built by build_backbone (or raw pixels) reads."""
    name = module.backbone_options["backbone"]
    return BACKBONES[name].dims if name in BACKBONES else module.backbone_options.get("dims", 2)


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


def check_patch_topk(name: str, k: int | None, size: int) -> None:
    """A ValueError unless backbone `name` takes a top-K patch head of `k` tokens at `size` px (None: no head)."""
    if k is None:
        return
    if not BACKBONES[name].patch_topk:
        raise ValueError(f"backbone {name} has no patch tokens for a top-K head (ViTs have)")
    from models.vit import patch_size as vit_patch_size
    tokens = (size // vit_patch_size(size)) ** 2
    if not 1 <= k <= tokens:
        raise ValueError(f"{size} px images give {name} {tokens} patch tokens, so K must be between 1 and {tokens}")


def build_backbone(backbone: str = DEFAULT_BACKBONE, in_channels: int = 3, size: int = 28,
                   stem: str | None = None, resize: int | None = None, patch_topk: int | None = None) -> nn.Module:
    """The network `backbone` for images of `in_channels` channels and `size` pixels (only ViTs depend on
    it), or, with `resize`, for any image upsampled to `resize` pixels on the device first (models.resize);
    `patch_topk` K: a ViT's top-K patch head. Its options are kept as `module.backbone_options`, the same dict
    `build_backbone(**options)` takes."""
    stem = check_stem(backbone, stem)
    check_patch_topk(backbone, patch_topk, resize or size)
    extra = {"patch_topk": patch_topk} if patch_topk is not None else {}
    module = BACKBONES[backbone].build(in_channels, resize or size, stem, **extra)
    if resize:
        from models.resize import InputResize

        module.register_forward_pre_hook(InputResize(resize))
    module.backbone_options = {"backbone": backbone, "stem": stem, "in_channels": in_channels, "size": size,
                               "resize": resize, "patch_topk": patch_topk}
    return module


def backbone_options(hparams: dict) -> dict:
    """The build_backbone options a checkpoint records; older ones (ours: `arch`; the study's: nothing) were
    ResNet-18s with the ImageNet stem and 3 input channels."""
    name = hparams.get("backbone") or hparams.get("arch") or DEFAULT_BACKBONE
    return {"backbone": name, "stem": hparams.get("stem") or (default_stem(name) if name in BACKBONES else None),
            "in_channels": hparams.get("in_channels", 3), "size": hparams.get("size", 28),
            "resize": hparams.get("resize"), "patch_topk": hparams.get("patch_topk")}


def reads(backbone: nn.Module, channels: int, size: int, dims: int = 2) -> bool:
    """Whether `backbone` can encode `dims`-dimensional images of `channels` channels and `size` pixels."""
    from models.stem import accepts

    options = backbone.backbone_options
    fixed = BACKBONES[options["backbone"]].fixed_size and not options.get("resize")  # a resized one reads any size
    return (backbone_dims(backbone) == dims and accepts(backbone.in_channels, channels)
            and (not fixed or options["size"] == size))


def require_reads(backbone: nn.Module, channels: int, size: int, what: str, fix: str, dims: int = 2) -> None:
    """A UserError naming `what` (the checkpoint) unless `backbone` reads such images."""
    from models.stem import conversion_note

    if reads(backbone, channels, size, dims):
        note = conversion_note(backbone.in_channels, channels) if dims == 2 else None
        if note:
            print(note)
    else:
        options, mine = backbone.backbone_options, backbone_dims(backbone)
        kind, unit = {2: "images", 3: "volumes"}, {2: "px", 3: "voxels"}
        raise UserError(f"{what} takes {options['in_channels']}-channel {kind[mine]} of {options['size']} {unit[mine]} "
                        f"({options['backbone']}) but the dataset has {channels}-channel {kind[dims]} of {size} "
                        f"{unit[dims]}", fix)
