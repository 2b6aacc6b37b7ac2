"""What the shared Trainer reads of a run's options, as one frozen dataclass: the library takes this, never the
command line's Namespace (common.cli.parsers.train_parser defines the options; common.cli.options types them)."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrainerOptions:
    epochs: int | None  # --epochs (None: the module's own max_epochs, as --time-budget plans them)
    accelerator: str = "auto"
    devices: str = "auto"  # a count or "auto", as --devices takes it
    num_nodes: int = 1
    precision: str = "32-true"
    val_every: int = 1  # --val-every / --monitor-every: validate every N epochs
    checkpoint_every_n_steps: int | None = None  # pretraining's: last.ckpt every N steps too
    deterministic: bool = False
    resume: bool = False  # continue the run's last checkpoint
    compile: bool = False  # torch.compile the encoder

    @classmethod
    def of(cls, options) -> "TrainerOptions":
        """The fields a stage's run options (common.cli.options.TrainOptions) have (a stage without one keeps its
        default)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})
