"""Where a classifier looks: one heat map per image, from the network's own structure.

- CNNs (ResNets, the small CNN): Grad-CAM (Selvaraju et al. 2017) on the deepest convolutional block whose maps
  are at least 7 x 7 (the last one, layer4, of a ResNet at 224 px; at 28 px with the ImageNet stem layer4 is
  1 x 1 and layer1 is 7 x 7). With A^k the block's activation maps and y^c the logit of class c,

      alpha_k^c = mean_{i,j} d y^c / d A^k_{ij},      L^c = ReLU( sum_k alpha_k^c A^k )

  upsampled (bilinear) to the image. Our own few lines, tested against this definition (tests/common/explain/test_explain.py).
- ViTs with the top-K patch head (--patch-topk): its softmax over the patch scores, the map the head learned.
- Other ViTs: attention rollout (Abnar & Zuidema 2020): per block the attention averaged over heads, plus the
  identity for the residual path, rows renormalised; their product over the blocks; the class token's row over
  the patch tokens.

Every map is scaled to [0, 1] per image. Images only: volumes have no heat maps here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.small_cnn import SmallCNN
from models.resnet import ResNetEncoder
from models.vit import ConvStemViT


MIN_SIDE = 7  # ours: Grad-CAM reads the deepest block whose maps are at least 7 x 7 (a ResNet's layer4 at 224 px)


def conv_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The blocks Grad-CAM may read, shallow to deep: a ResNet's layer1-4, the small CNN's conv blocks."""
    if isinstance(encoder, ResNetEncoder):
        return [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    if isinstance(encoder, SmallCNN) and encoder.pool.__class__.__name__.endswith("2d"):
        return [block for block in encoder.features if isinstance(block, nn.Sequential)]
    return []


def method_name(encoder: nn.Module) -> str:
    """The heat map this encoder gives: 'Grad-CAM', 'patch scores' or 'attention rollout'."""
    if isinstance(encoder, ConvStemViT):
        return "patch scores" if encoder.topk is not None else "attention rollout"
    if conv_blocks(encoder):
        return "Grad-CAM"
    raise ValueError(f"no heat map for {encoder.backbone_options['backbone']}: images through a ResNet, the small "
                     "CNN or a ViT only")


def scale(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> each map shifted and scaled to [0, 1]; a (numerically) constant map becomes 0."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    spread = high - low
    flat = torch.where(spread > 1e-6 * high.abs().clamp_min(1e-12), (flat - low) / spread.clamp_min(1e-30), 0.0)
    return flat.view_as(maps)


def grad_cam(model: nn.Module, layers: list[nn.Module], x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of `model`'s logits `target` (N,), at x's size, from the deepest of `layers` whose
    output is at least MIN_SIDE on each side (the first of them when none is)."""
    saved = []

    def keep(module, inputs, output):
        entry = {"activation": output}
        output.register_hook(lambda grad: entry.__setitem__("gradient", grad))
        saved.append(entry)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # gradients reach the activations even through frozen weights
            logits = model(x)
            logits.gather(1, target[:, None]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    wide = [entry for entry in saved if min(entry["activation"].shape[-2:]) >= MIN_SIDE]
    entry = wide[-1] if wide else saved[0]
    activation, gradient = entry["activation"].detach(), entry["gradient"]
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # alpha_k: (N, K, 1, 1)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    return scale(F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])


def attention_rollout(vit: ConvStemViT, x: torch.Tensor) -> torch.Tensor:
    """(N, grid, grid): the class token's rolled-out attention over the patch tokens."""
    attentions = []

    def record(module, inputs, kwargs, output):
        query = inputs[0] if inputs else kwargs["query"]
        # forward, not __call__: the same attention again, with its weights, without re-entering this hook
        _, weights = module.forward(query, query, query, need_weights=True, average_attn_weights=True)  # (N, T, T)
        attentions.append(weights)

    hooks = [block.self_attention.register_forward_hook(record, with_kwargs=True) for block in vit.encoder.layers]
    try:
        with torch.no_grad():
            vit.tokens(x)
    finally:
        for hook in hooks:
            hook.remove()
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens, device=x.device).expand(len(x), -1, -1)
    for weights in attentions:
        mixed = 0.5 * weights + 0.5 * torch.eye(tokens, device=x.device)
        rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
    return rollout[:, 0, 1:].reshape(len(x), vit.grid, vit.grid)


def heatmaps(model: nn.Module, encoder: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, H, W) heat maps in [0, 1] at the images' size: how `model` (which ends in `encoder` + a head) arrives at
    the logits `target`, by the method `method_name(encoder)` names."""
    method = method_name(encoder)
    if method == "Grad-CAM":
        return grad_cam(model, conv_blocks(encoder), x, target)
    with torch.no_grad():
        maps = encoder.patch_scores(x) if method == "patch scores" else attention_rollout(encoder, x)
    return scale(F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
