"""Reading checkpoints (ours and the study's Lightning 1.9 files) and the one weight loader.

Every checkpoint is read with `torch.load(weights_only=True)`: tensors, containers and plain values
only, so a file carrying a pickled object that would run code is refused before anything runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from models.encoders import ResNetEncoder

from utils import UserError

KINDS = ("simclr", "logistic_regression", "resnet")
KIND_NAMES = {
    "simclr": "a SimCLR encoder (pretrain/simclr)",
    "logistic_regression": "a logistic-regression head (downstream/logistic_regression)",
    "resnet": "a finetuned/baseline ResNet (downstream/resnet)",
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
    """Which stage wrote this checkpoint: ours record it, the study's are told apart by their keys."""
    stage = (ckpt.get("hyper_parameters") or {}).get("stage")
    if stage in KINDS:
        return stage
    keys = ckpt["state_dict"].keys()
    if any(k.startswith("convnet.") for k in keys):
        return "simclr"
    if any(k.startswith("backbone.") for k in keys):
        return "resnet"
    if set(keys) == {"model.weight", "model.bias"}:
        return "logistic_regression"
    return "unknown"


def is_study_checkpoint(ckpt: dict) -> bool:
    return (ckpt.get("hyper_parameters") or {}).get("stage") not in KINDS


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
    kind = checkpoint_kind(ckpt)
    if kind not in wanted:
        got = KIND_NAMES.get(kind, "not a checkpoint of this framework or the study")
        need = " or ".join(KIND_NAMES[k] for k in wanted)
        raise UserError(f"{option} {path.name} is {got}", f"{option} needs {need}")
    return kind


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


def load_encoder(path: Path, option: str, channels: int) -> tuple[ResNetEncoder, dict]:
    """The encoder of a SimCLR or finetuned checkpoint (ours or the study's), and its hyper-parameters.

    `channels`: those of the dataset it will see; an encoder that cannot take them is refused.
    """
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, path, ("simclr", "resnet"), option)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    encoder = ResNetEncoder(hparams.get("arch", "resnet18"), hparams.get("in_channels", 3))
    load_weights(encoder, submodule_state(our_state_dict(ckpt), "encoder"), f"{option} {path.name}")
    if not encoder.accepts(channels):
        raise UserError(f"{option} {path.name} takes {encoder.in_channels}-channel images but the dataset has "
                        f"{channels}", "use an encoder pretrained on images with the same channels")
    return encoder, hparams


def recorded_dataset(ckpt: dict, path: Path) -> str | None:
    """The dataset a checkpoint was trained on: recorded by ours, in the name of the study's."""
    recorded = (ckpt.get("hyper_parameters") or {}).get("dataset")
    if recorded:
        return recorded
    parts = path.stem.split("-")
    return parts[1] if len(parts) > 1 and parts[0] in ("pretrain", "downstream", "baseline") else None


def build_from_checkpoint(cls, ckpt: dict, source: str, **overrides):
    """Instantiate LightningModule `cls` from a checkpoint's hyper-parameters (ours or the study's,
    unknown ones dropped, `overrides` winning) and load its weights with `load_weights`."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    hparams = {k: v for k, v in dict(ckpt.get("hyper_parameters") or {}).items() if k in accepted and k != "stage"}
    module = cls(**{**hparams, **overrides})
    load_weights(module, our_state_dict(ckpt), source)
    return module
