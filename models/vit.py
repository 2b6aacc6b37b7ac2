"""A Vision Transformer whose patchify layer is replaced by a small convolutional stem.

Xiao et al., "Early Convolutions Help Transformers See Better" (NeurIPS 2021): a stack of 3x3 stride-2
conv-BN-ReLU layers (widths doubling up to the embedding width) and a 1x1 convolution replace the
16x16 patchify convolution; optimisation becomes far less sensitive to the learning rate and optimiser,
and one transformer block is removed to keep the compute equal. We use torchvision's implementation
(`VisionTransformer(conv_stem_configs=...)`, which follows that paper) with its state-dict layout, and
give the first stem convolution the dataset's channels. Features: the class token, (N, hidden_dim).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

from models.stem import StemConv2d
from models.topk_pool import TopKPatchPool
from models.choices import VIT_SIZES

MAX_TOKENS = 256  # the patch size is the smallest power of two >= 4 giving at most 16x16 tokens
MIN_PATCH = 4  # 28 px -> 7x7 tokens, 64 px -> 16x16, 128 px -> patch 8, 224 px -> patch 16 (ViT's own)


def patch_size(image_size: int) -> int:
    patch = MIN_PATCH
    while (image_size // patch) ** 2 > MAX_TOKENS or image_size % patch:
        patch *= 2
        if patch > image_size:
            raise ValueError(f"no patch size divides {image_size} px images")
    return patch


def stem_configs(patch: int, hidden_dim: int) -> list[ConvStemConfig]:
    """log2(patch) 3x3 stride-2 conv-BN-ReLU layers, widths doubling to hidden_dim (Xiao et al., table 1)."""
    layers = patch.bit_length() - 1
    return [ConvStemConfig(out_channels=hidden_dim // 2 ** (layers - 1 - i), kernel_size=3, stride=2)
            for i in range(layers)]


class ConvStemViT(VisionTransformer):
    """Images (N, C, S, S) with S = `image_size`, normalised -> features (N, hidden_dim): the class token, or with
    `patch_topk` K the top-K patch head's embedding (models.topk_pool), whose scores `patch_scores` returns."""

    def __init__(self, size: str = "tiny", in_channels: int = 3, image_size: int = 28, patch_topk: int | None = None):
        if size not in VIT_SIZES:
            raise ValueError(f"unknown ViT size {size!r}; choose one of {', '.join(VIT_SIZES)}")
        config = VIT_SIZES[size]
        patch = patch_size(image_size)
        super().__init__(image_size=image_size, patch_size=patch, conv_stem_configs=stem_configs(patch, config["hidden_dim"]),
                         norm_layer=partial(nn.LayerNorm, eps=1e-6), **config)
        first = self.conv_proj.conv_bn_relu_0[0]
        self.conv_proj.conv_bn_relu_0[0] = StemConv2d(in_channels, first.out_channels, first.kernel_size,
                                                      first.stride, first.padding, bias=False)
        self.in_channels, self.feature_dim = in_channels, config["hidden_dim"]
        self.stage_widths = (config["hidden_dim"],) * config["num_layers"]
        self.heads = nn.Identity()
        self.grid = image_size // patch  # tokens per side
        if patch_topk is not None and not 1 <= patch_topk <= self.grid ** 2:
            raise ValueError(f"--patch-topk {patch_topk}: {image_size} px images have {self.grid ** 2} patch tokens "
                             f"({self.grid}x{self.grid} of {patch} px)")
        self.topk = TopKPatchPool(config["hidden_dim"], patch_topk) if patch_topk else None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 + tokens, hidden_dim): the class token and the patch tokens after the transformer."""
        x = self._process_input(x)  # (N, tokens, hidden_dim)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)
        return self.encoder(x)

    def stage_outputs(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """The patch tokens (N, hidden_dim, tokens) after transformer blocks 1 to `upto` (channels first, as a
        convolution's output, so that models.stages pools every backbone alike)."""
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)
        x = self.encoder.dropout(x + self.encoder.pos_embedding)  # as torchvision's Encoder.forward
        outputs = []
        for block in list(self.encoder.layers)[:upto]:
            x = block(x)
            outputs.append(x[:, 1:].transpose(1, 2))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tokens(x)
        return self.topk(out[:, 1:]) if self.topk is not None else out[:, 0]  # (N, hidden_dim)

    def patch_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, grid, grid): the top-K head's softmax over all patch scores (needs `patch_topk`)."""
        scores = self.topk.scores(self.tokens(x)[:, 1:]).softmax(dim=1)
        return scores.view(len(x), self.grid, self.grid)
