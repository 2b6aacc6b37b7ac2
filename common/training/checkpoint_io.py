"""Checkpoint files that survive interruption: written atomically, and a full disk (or a folder that cannot be
written) a one-line error that names what is kept."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from utils import UserError, atomic_path


WRITE_ERRNOS = {errno.ENOSPC: "no space left on", errno.EDQUOT: "disk quota exceeded on",
                errno.EACCES: "permission denied on", errno.EROFS: "read-only file system at",
                errno.ENOENT: "the folder vanished:"}
MB = 2**20


def tensor_bytes(value) -> int:
    """Bytes of every tensor in a (nested) checkpoint dict: about the size torch.save writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def free_bytes(folder: Path) -> int:
    existing = next(p for p in [Path(folder), *Path(folder).parents] if p.exists())
    return shutil.disk_usage(existing).free


def write_failure(err: BaseException, path: Path, need: int) -> UserError | None:
    """A one-line UserError for a write that failed for lack of space, permissions or a vanished folder (torch's
    zip writer reports a full disk as RuntimeError "unexpected pos"), else None."""
    reason = WRITE_ERRNOS.get(getattr(err, "errno", None))
    if reason is None and isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write failed" in str(err)):
        reason = WRITE_ERRNOS[errno.ENOSPC]
    if reason is None:
        return None
    try:
        free = f"{free_bytes(path.parent) / MB:.0f} MB free; "
    except OSError:
        free = ""
    return UserError(f"{reason} {path.parent} ({free}the checkpoint needs about {need / MB:.0f} MB); {path.name} "
                     "was not written, every earlier checkpoint is kept",
                     "free some space (or fix the folder), then run the same command with --resume")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the final name:
    a crash during a save never leaves a truncated file under the final name; a full disk (or a folder that went
    away or cannot be written) is a one-line error, the temporary file removed."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        try:
            with atomic_path(Path(path)) as tmp:
                with open(tmp, "wb") as handle:
                    torch.save(checkpoint, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
        except (OSError, RuntimeError) as err:
            failure = write_failure(err, Path(path), tensor_bytes(checkpoint))
            if failure is None:
                raise
            raise failure from None
