"""An encoder read at the features `--features` names (models.feature_choice): its own output, or the globally
average-pooled outputs of some of its stages, concatenated.

    reader = read_features(encoder, "stage:1")    # (N, C, H, W) -> (N, 32) for the small CNN
    reader = read_features(encoder, "stages")     # every stage pooled: (N, 32 + 64 + 128 + 256)

The reader is a frozen view of the encoder (its weights are the encoder's, not copied) with the attributes every
stage reads off an encoder (`feature_dim`, `in_channels`, `backbone_options`); `features_read` names what it
reads.
"""
from __future__ import annotations

import torch
from torch import nn

from models.feature_choice import LAST, canonical, resolve
from utils import UserError


def stage_count(encoder: nn.Module) -> int:
    """How many stages `encoder` has for --features stage:K (0: none, as the raw pixels)."""
    return len(getattr(encoder, "stage_widths", ()))


class StageFeatures(nn.Module):
    """Images -> the pooled outputs of `stages` (1-based) of `encoder`, concatenated: (N, sum of their widths).
    `with_last`: the encoder's own output first (what `all_candidates` splits)."""

    def __init__(self, encoder: nn.Module, stages: tuple[int, ...], features: str, with_last: bool = False):
        super().__init__()
        self.encoder, self.stages, self.features_read, self.with_last = encoder, stages, features, with_last
        self.in_channels, self.backbone_options = encoder.in_channels, encoder.backbone_options
        widths = [encoder.stage_widths[k - 1] for k in stages]
        self.widths = [encoder.feature_dim] * with_last + widths
        self.feature_dim = sum(self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for hook in self.encoder._forward_pre_hooks.values():  # --resize (models.resize): as encoder(x) would
            x = hook(self.encoder, (x,))[0]
        outputs = self.encoder.stage_outputs(x, max(self.stages)) if self.stages else []
        pooled = [outputs[k - 1].flatten(2).mean(dim=2) for k in self.stages]  # global average pool
        return torch.cat([self.encoder(x)] * self.with_last + pooled, dim=1)


def read_features(encoder: nn.Module, features: str = LAST) -> nn.Module:
    """`encoder` itself for 'last', else a StageFeatures reading the stages `features` names; a UserError for a
    stage the network lacks."""
    features = canonical(features)
    if features == LAST:
        return encoder
    count = stage_count(encoder)
    name = encoder.backbone_options["backbone"]
    if not count:
        raise UserError(f"--features {features}: {name} has no stages", f"use --features {LAST}")
    try:
        stages = resolve(features, count)
    except ValueError as err:
        raise UserError(f"{err} ({name})", f"use --features stage:1 to stage:{count}, or {LAST}") from None
    return StageFeatures(encoder, stages, features)  # its weights as they are: frozen where the encoder is


def all_stages(encoder: nn.Module) -> StageFeatures:
    """A reader of the encoder's own output and every stage pooled, in one pass: what `split_candidates` splits into
    each candidate of models.feature_choice.candidates."""
    count = stage_count(encoder)
    return StageFeatures(encoder, tuple(range(1, count + 1)), "all", with_last=True)


def split_candidates(features: torch.Tensor, reader: StageFeatures) -> dict[str, torch.Tensor]:
    """`all_stages`' features (N, D) -> {candidate spec: its columns}: last, stage:1 .. stage:S, stages."""
    parts = features.split(reader.widths, dim=1)
    candidates = {LAST: parts[0], **{f"stage:{k}": part for k, part in zip(reader.stages, parts[1:])}}
    if reader.stages:
        candidates["stages"] = torch.cat(parts[1:], dim=1)
    return candidates

