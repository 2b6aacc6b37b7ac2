"""Typed run options: each command turns its parsed Namespace once into a frozen dataclass that names every option
the library reads (`from_namespace`), and library functions take that dataclass or plain arguments, never the
Namespace. The classes here are the option groups several commands share (common.cli.parsers defines the options
themselves: their defaults, ranges and help); a stage's own class adds its options' fields.

Every field is keyword-only and (but for options a command sets only in some cases) has no default: the parser holds
the defaults, once, and a field the command line does not fill is an error at the conversion, not a silent default
deep in a run.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields

PARSER_ONLY = ("config", "print_config")  # what the parser itself acts on; no run reads them
EXTRA = "extra"  # a class with a field of this name takes the options it does not name into it (a method's own)


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """common.cli.parsers.data_parser's: the data, the seed, the hardware."""
    dataset: str
    size: int
    data_dir: str | None
    labels_from: str | None
    fit: str
    window: str | None
    data_storage: str
    seed: int
    accelerator: str
    devices: str
    num_nodes: int
    precision: str


@dataclass(frozen=True, kw_only=True)
class TrainOptions(DataOptions):
    """common.cli.parsers.train_parser's: what every training run takes beyond its data."""
    epochs: int | None
    batch_size: int | None
    samples: int | None
    name: str | None
    overwrite: bool
    val_every: int
    resume: bool
    checkpoint_every_n_steps: int | None
    compile: bool
    deterministic: bool


@dataclass(frozen=True, kw_only=True)
class NetworkOptions:
    """common.cli.parsers.add_backbone_options': the network built from scratch."""
    backbone: str | None
    stem: str | None
    resize: int | None
    patch_topk: int | None


def from_namespace(cls, namespace: argparse.Namespace, subset: bool = False, **changes):
    """The frozen dataclass `cls` from a command's parsed options (see from_values)."""
    return from_values(cls, vars(namespace), subset, **changes)


def from_values(cls, values: dict, subset: bool = False, **changes):
    """The frozen dataclass `cls` from option values (dest -> value), then `changes`. Every option must have a field
    (or go to the class's `extra` mapping, where it has one) unless `subset` (the group of options a command has
    among others it reads itself), and every field an option: a mismatch is a programming error, named."""
    values = {key: value for key, value in {**values, **changes}.items() if key not in PARSER_ONLY}
    names = {field.name for field in fields(cls)}
    unnamed = {key: values.pop(key) for key in list(values) if key not in names}
    if EXTRA in names:
        values[EXTRA] = {**unnamed, **values.get(EXTRA, {})}
    elif unnamed and not subset:
        raise TypeError(f"{cls.__name__} has no field for option(s) {', '.join(sorted(unnamed))}")
    missing = {field.name for field in fields(cls) if field.name not in values
               and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
    if missing:
        raise TypeError(f"{cls.__name__}: no option gives field(s) {', '.join(sorted(missing))}")
    return cls(**values)


def as_record(options) -> dict:
    """The options as a run's config.json records them (what --config reads back): one flat mapping, the `extra`
    options (a method's own) among the others."""
    values = {field.name: getattr(options, field.name) for field in fields(options)
              if field.metadata.get("record", True)}  # record=False: the run records it elsewhere
    return {**{k: v for k, v in values.items() if k != EXTRA}, **values.get(EXTRA, {})}


def replace(options, **changes):
    """dataclasses.replace: a copy of `options` with `changes` (the run resolving a default, recorded as it ran)."""
    return dataclasses.replace(options, **changes)
