"""Reading checkpoints (ours and the study's Lightning 1.9 files) and the one weight loader.

Every checkpoint is read with `torch.load(weights_only=True)`: tensors, containers and plain values
only, so a file carrying a pickled object that would run code is refused before anything runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from models.backbones import backbone_options, build_backbone, require_reads
from utils import DOWNSTREAM_STAGES, METHOD_NAME, UserError

PRETRAINED = "pretrained"  # in `expect_kind`'s wanted kinds: an encoder of any pretraining method
LEGACY_STAGE = "simclr"  # our checkpoints before methods were plug-ins recorded stage "simclr", no method
KIND_NAMES = {
    "logistic_regression": "a logistic-regression head (downstream/logistic_regression)",
    "resnet": "a finetuned/baseline classifier (downstream/resnet)",
    PRETRAINED: "a pretrained encoder (pretrain/<method>)",
}

# the study's key prefixes -> ours, per kind (its projection head sat in `convnet.fc`)
STUDY_PREFIXES = {
    "simclr": [("convnet.fc.", "projector."), ("convnet.", "encoder.")],
    "logistic_regression": [("model.", "head.")],
    "resnet": [("backbone.fc.", "head."), ("backbone.", "encoder.")],
}


def _attribute_dict_globals() -> list:
    """Lightning 1.9 pickled hyper-parameters as an AttributeDict (a dict subclass): read it as a plain dict."""
    names = [
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "lightning.fabric.utilities.data.AttributeDict",
    ]
    return [(dict, name) for name in names]


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely onto the CPU; a UserError for unreadable or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist", "check the path or run name")
    try:
        with torch.serialization.safe_globals(_attribute_dict_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"refusing to load {path}: it holds pickled objects that could run code",
            f"only load checkpoints from sources you trust; {str(err).splitlines()[0][:120]}",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0][:120]})",
                        "it may be truncated; download or train it again") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{path} is not a Lightning checkpoint (no state_dict)", "pass a .ckpt written by Lightning")
    return ckpt


def checkpoint_kind(ckpt: dict) -> str:
    """What wrote this checkpoint: a pretraining method's name, a downstream stage, or "unknown".
    Ours record it; the study's are told apart by their keys."""
    hparams = ckpt.get("hyper_parameters") or {}
    method, stage = hparams.get("method"), hparams.get("stage")
    if isinstance(method, str) and METHOD_NAME.fullmatch(method) and method not in DOWNSTREAM_STAGES:
        return method
    if stage in DOWNSTREAM_STAGES or stage == LEGACY_STAGE:
        return stage
    keys = ckpt["state_dict"].keys()
    if any(k.startswith("convnet.") for k in keys):
        return "simclr"
    if any(k.startswith("backbone.") for k in keys):
        return "resnet"
    if set(keys) == {"model.weight", "model.bias"}:
        return "logistic_regression"
    return "unknown"


def is_pretrained(kind: str) -> bool:
    return kind != "unknown" and kind not in DOWNSTREAM_STAGES


def kind_name(kind: str) -> str:
    if kind in KIND_NAMES:
        return KIND_NAMES[kind]
    if is_pretrained(kind):
        return f"a {kind} encoder (pretrain/{kind})"
    return "not a checkpoint of this framework or the study"


def is_study_checkpoint(ckpt: dict) -> bool:
    return not {"stage", "method"} & set(ckpt.get("hyper_parameters") or {})


def our_state_dict(ckpt: dict) -> dict[str, torch.Tensor]:
    """The state dict under our key names: ours as saved, the study's renamed by exact prefixes."""
    state = ckpt["state_dict"]
    if not is_study_checkpoint(ckpt):
        return dict(state)
    renamed = {}
    for key, value in state.items():
        for old, new in STUDY_PREFIXES.get(checkpoint_kind(ckpt), []):
            if key.startswith(old):
                renamed[new + key[len(old):]] = value
                break
        else:
            renamed[key] = value  # left as is: load_weights reports it as unexpected
    return renamed


def expect_kind(ckpt: dict, path: Path, wanted: tuple[str, ...], option: str) -> str:
    """The checkpoint's kind if it is one of `wanted` (PRETRAINED: any method), else a UserError."""
    kind = checkpoint_kind(ckpt)
    if kind in wanted or (PRETRAINED in wanted and is_pretrained(kind)):
        return kind
    need = " or ".join(kind_name(k) for k in wanted)
    raise UserError(f"{option} {path.name} is {kind_name(kind)}", f"{option} needs {need}")


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix.` with the prefix removed (e.g. the encoder of a whole module)."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                 expected_missing: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`, failing on any missing, unexpected or mis-shaped key.

    `expected_missing` names key prefixes that may legitimately be absent (e.g. a new head).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(expected_missing)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = [(missing, "missing"), (unexpected, "unexpected"), (shapes, "mis-shaped")]
    for keys, what in problems:
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise UserError(f"{source}: {what} weights {', '.join(keys[:3])}{more}",
                            "the checkpoint does not match this network")
    kept = {k: v for k, v in own.items() if k not in state}  # only expected-missing keys remain here
    module.load_state_dict({**kept, **state})


def load_encoder(path: Path, option: str, channels: int, size: int, dims: int = 2) -> nn.Module:
    """The encoder of any pretraining method's or a finetuned checkpoint (ours or the study's), built by
    the backbone registry from the options it records.

    `channels`, `size`, `dims`: those of the dataset it will see; an encoder that cannot read them is refused.
    """
    return encoder_from(read_checkpoint(path), path, option, channels, size, dims)


def encoder_from(ckpt: dict, path: Path, option: str, channels: int, size: int, dims: int = 2) -> nn.Module:
    """load_encoder for a checkpoint already read."""
    expect_kind(ckpt, path, (PRETRAINED, "resnet"), option)
    try:
        encoder = build_backbone(**backbone_options(dict(ckpt.get("hyper_parameters") or {})))
    except ValueError as err:
        raise UserError(f"{option} {path.name}: {err}", "it was written by another version of this framework")
    load_weights(encoder, submodule_state(our_state_dict(ckpt), "encoder"), f"{option} {path.name}")
    require_reads(encoder, channels, size, f"{option} {path.name}",
                  "use an encoder pretrained on the same kind of data (2D or 3D, channels, and size for a ViT)", dims)
    encoder.recorded_features = (ckpt.get("hyper_parameters") or {}).get("features")  # its recipe's --features
    return encoder


def recorded_dataset(ckpt: dict, path: Path) -> str | None:
    """The dataset a checkpoint was trained on: recorded by ours, in the name of the study's."""
    recorded = (ckpt.get("hyper_parameters") or {}).get("dataset")
    if recorded:
        return recorded
    parts = path.stem.split("-")
    return parts[1] if len(parts) > 1 and parts[0] in ("pretrain", "downstream", "baseline") else None


def init_parameters(cls) -> set[str]:
    """The keyword arguments `cls(...)` takes, following `**kwargs` passed on to the base classes."""
    import inspect

    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def build_from_checkpoint(cls, ckpt: dict, source: str, **overrides):
    """Instantiate LightningModule `cls` from a checkpoint's hyper-parameters (ours or the study's,
    unknown ones dropped, `overrides` winning) and load its weights with `load_weights`."""
    accepted = init_parameters(cls)
    recorded = dict(ckpt.get("hyper_parameters") or {})
    recorded.update(backbone_options(recorded))  # older checkpoints: `arch`, or nothing
    hparams = {k: v for k, v in recorded.items() if k in accepted and k != "stage"}
    module = cls(**{**hparams, **overrides})
    load_weights(module, our_state_dict(ckpt), source)
    return module
