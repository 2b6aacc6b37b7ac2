"""The command-line options every stage shares, their checks, and configuration files.

Every option is checked as it is parsed, before anything is imported that takes seconds (torch, Lightning) and
before a run folder exists: numbers against their ranges (`Number`), names against their lists, the data set and
its size against MedMNIST's table (common.data.registry), the accelerator against this machine (common.training.hardware). Each
mistake is one line, `error: ...`, exit code 2.

Train commands take `--config FILE` (YAML or JSON: option names as keys, with - or _; the `config.json` a run
writes is taken as is) under the command line, which overrides it, and `--print-config`, which prints the
resolved options as YAML (a file `--config` takes) and exits.
"""
from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from pathlib import Path
from typing import Callable, Iterable

from common.cli.options import PARSER_ONLY
from common.data.registry import DEFAULT_DATA_DIR, check_size
from common.data.scans.decode import FITS
from common.data.sources import check_text, is_flag, resolve
from common.training.hardware import ACCELERATORS, PRECISIONS, check_hardware
from common.data.storage import IN_MEMORY_BYTES, STORAGES
from models.backbones import (BACKBONES, DEFAULT_BACKBONE, DEFAULT_BACKBONE_3D, check_patch_topk, check_stem,
                              default_backbone)
from models.choices import STEMS
from utils import UserError

DEFAULT_SIZE = 28  # MedMNIST's original image size
DEFAULT_DATASET = "bloodmnist"  # the study's first example
SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
# what a command does rather than how it trains: from the command line only, skipped in --config files (a saved
# config.json of a resumed run says resume: true, and rerunning it under a new --name must not resume)
COMMAND_ONLY = ("config", "print_config", "resume", "overwrite", "help")


class Number:
    """An argparse type: an int or float within [low, high] (an end excluded where `open_low`/`open_high`), or a
    one-line error saying the range. `outside()` gives values just outside it (the tests try them all)."""

    def __init__(self, kind: type = int, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False):
        self.kind, self.low, self.high, self.open_low, self.open_high = kind, low, high, open_low, open_high
        self.__name__ = kind.__name__  # argparse names the type in some messages

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.open_high else '<='} {self.high:g}"
        return noun

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if not math.isfinite(value) or not self.within(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def within(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.open_high and value == self.high))

    def outside(self) -> list[str]:
        """Values this type refuses: just beyond each end, a non-number, and for floats nan and inf."""
        step = 1 if self.kind is int else 1e-9
        values = ["x"]
        if self.low is not None:
            values.append(str(self.low if self.open_low else self.kind(self.low - step)))
        if self.high is not None:
            values.append(str(self.high if self.open_high else self.kind(self.high + step)))
        if self.kind is float:
            values += ["nan", "inf"]
        return values


POSITIVE_INT = Number(int, 1)
NON_NEGATIVE_INT = Number(int, 0)
SEED = Number(int, 0, SEED_MAX)
POSITIVE = Number(float, 0, open_low=True)
LEARNING_RATE = Number(float, 0, 10, open_low=True)  # ours: above 10 no optimiser here converges
WEIGHT_DECAY = Number(float, 0, 1)  # decoupled (AdamW) or L2 (SGD): 1 already shrinks weights by lr per step
TEMPERATURE = Number(float, 0, 10, open_low=True)  # ours: above 10 the softmax is flat
MOMENTUM = Number(float, 0, 1, open_high=True)  # a moving average's: 1 would never move


def dataset_flag(text: str) -> str:
    """--dataset: a MedMNIST flag (common.data.registry; else the closest one named), a folder or an npz file."""
    try:
        return check_text(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def window(text: str) -> str:
    """--window LOW,HIGH: two numbers, LOW < HIGH (kept as text, as a config file holds it)."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH (two numbers), got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH with LOW < HIGH, got {text!r}")
    return f"{low:g},{high:g}"


def devices(text: str) -> str:
    """--devices: auto or a positive number (kept as text: Lightning takes both)."""
    if text != "auto" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"must be auto or a positive integer, got {text!r}")
    return text


def read_config(path: Path) -> dict:
    """The options of a YAML or JSON file: a mapping of option names to values, or a run's saved config.json
    (its "options")."""
    if not path.is_file():
        raise UserError("no such file")
    import yaml

    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:  # each names the line
        raise UserError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                        f"{' '.join(str(err).split())}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"expected a mapping of option names to values, got {type(values).__name__}")
    if isinstance(values.get("options"), dict):  # a run's config.json: options, and what the run recorded
        values = values["options"]
    return values


class Parser(argparse.ArgumentParser):
    """argparse with a one-line `error: ...` instead of a usage dump, no abbreviated options, checks run after
    parsing (`checks`: functions of the parsed options raising UserError), and --config / --print-config where
    add_config_options added them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --conf would otherwise be --config: say what you mean
        super().__init__(*args, **kwargs)
        self.checks: list[Callable[[argparse.Namespace], None]] = []
        self.source: str | None = None  # the --config file being read, named in its errors
        self.given: set[str] = set()  # the dests the last parse was given (command line, --config file or values)

    def error(self, message: str):
        where = f"{self.source}: " if self.source else ""
        print(f"error: {where}{message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def options(self) -> dict[str, argparse.Action]:
        """dest -> action of every --option."""
        return {action.dest: action for action in self._actions if action.option_strings}

    def given_dests(self, words: list[str]) -> set[str]:
        """The dests of the options named in command-line `words` (--name or --name=value; no abbreviations)."""
        strings = {string: action.dest for action in self._actions for string in action.option_strings}
        dests = set()
        for word in words:
            if word == "--":
                break
            if word.startswith("--") and word.split("=", 1)[0] in strings:
                dests.add(strings[word.split("=", 1)[0]])
        return dests

    def parse_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        prior: list[str] = []
        in_file: set[str] = set()  # the dests the --config file names, a null too: a rerun repeats the run
        if "config" in self.options():
            pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            pre.add_argument("--config", type=Path)
            config = pre.parse_known_args(argv)[0].config
            if config is not None:
                self.source = str(config)  # errors in the file name the file
                prior, in_file = self.config_argv(config)
                super().parse_args(prior)
                self.source = None
        parsed = super().parse_args(prior + argv, namespace)  # the command line after the file: it overrides it
        self.given = self.given_dests(argv) | in_file
        for check in self.checks:
            try:
                check(parsed)
            except UserError as err:
                self.error(str(err))
        if getattr(parsed, "print_config", False):
            print(config_yaml(self, parsed), end="")
            sys.exit(0)
        return parsed

    def parse_values(self, values: dict, given: Iterable[str] = ()) -> argparse.Namespace:
        """The options `values` (dest -> value, already typed: what another command computed) over the defaults,
        checked as parse_args checks a command line (`checks`); a dest the parser does not have is an error. A value
        None is left to the defaults (and --recipe) unless its dest is in `given` (a search's "no --resize")."""
        options = {dest: action.default for dest, action in self.options().items()
                   if dest not in ("help", *PARSER_ONLY)}
        unknown = sorted(set(values) - set(options))
        if unknown:
            raise TypeError(f"{self.prog} has no option(s) {', '.join(unknown)}")
        parsed = argparse.Namespace(**{**options, **values})
        self.given = {dest for dest, value in values.items() if value is not None or dest in given}
        for check in self.checks:
            try:
                check(parsed)
            except UserError as err:
                self.error(str(err))
        return parsed

    def config_argv(self, path: Path) -> tuple[list[str], set[str]]:
        """The options of file `path` as command-line words, and the dests it names (a null's too: it has no words);
        an unknown key is an error naming the closest one."""
        try:
            values = read_config(path)
        except UserError as err:
            self.error(str(err))
        actions, argv, dests = self.options(), [], set()
        for key, value in values.items():
            dest = str(key).replace("-", "_")
            if dest in COMMAND_ONLY:
                continue
            if dest not in actions:
                close = difflib.get_close_matches(dest, [d for d in actions if d not in COMMAND_ONLY], n=1, cutoff=0.5)
                self.error(f"unknown option '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            dests.add(dest)
            argv += self.option_words(actions[dest], value)
        return argv, dests

    def option_words(self, action: argparse.Action, value) -> list[str]:
        """`value` of a config file as the command-line words of `action` (None: the option's default)."""
        option = action.option_strings[0]
        if value is None:
            return []
        if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                self.error(f"{action.dest} must be true or false, got {value!r}")
            if isinstance(action, argparse.BooleanOptionalAction):
                return [option if value else "--no-" + option[2:]]
            return [option] if value != action.default else []
        if isinstance(value, (list, tuple)):
            if action.nargs not in ("+", "*"):
                self.error(f"{action.dest} takes one value, got a list")
            return [option, *map(str, value)]
        if isinstance(value, (dict, bool)) and action.type is not None:
            self.error(f"{action.dest} takes {getattr(action.type, '__name__', 'a value')}, got {value!r}")
        return [f"{option}={value}"]  # one word: a value starting with - stays a value


def config_yaml(parser: Parser, args: argparse.Namespace) -> str:
    """The resolved options as YAML that --config reads back."""
    import yaml

    values = {dest: getattr(args, dest) for dest in parser.options() if dest not in COMMAND_ONLY}
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False)


def add_config_options(parser: Parser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="options from a YAML or JSON file (a run's saved <name>.config.json too); options on the "
                             "command line override it; --resume and --overwrite are taken from the command line only")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved options as YAML (a file --config takes) and exit")


def check_data_options(args: argparse.Namespace) -> None:
    if args.data_dir:  # absolute in the record, so that a rerun of its config finds it from anywhere
        args.data_dir = str(Path(args.data_dir).expanduser().resolve())
    check_hardware(args.accelerator, str(args.devices), args.precision)
    if args.dataset is not None and args.size is not None:  # test.py's: None until the checkpoint says
        resolve_data(args)


def resolve_data(args: argparse.Namespace):
    """--dataset and --size as resolved_data resolves them, in place. Returns the source."""
    source, args.dataset, args.size = resolved_data(args.dataset, args.size, args.data_dir, args.labels_from, args.fit,
                                                    args.window)
    return source


def resolved_data(dataset: str, size: int, data_dir: str | None, labels_from: str | None, fit: str,
                  window: str | None):
    """(source, dataset, size): --dataset resolved (common.data.sources: a folder decoded into its cache if it is not
    yet; a path made absolute for the record, as --data-dir), its size checked; an npz file's own image size becomes
    the size."""
    if is_flag(dataset):
        check_size(dataset, size)
    else:
        dataset = str(Path(dataset).expanduser().resolve())
    source = resolve(dataset, size, data_dir, labels_from, fit, window)
    if source.kind == "npz" and source.size != size:
        size = source.size  # the file's: an npz holds one size
    return source, dataset, size


def data_parser(description: str, labels_alias: bool = True) -> Parser:
    """Options naming the data: dataset flag (or folder, or npz), image size, folder options, seed, hardware.
    `labels_alias`: --labels for --labels-from (where a command's own --labels means something else, it is not)."""
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", type=dataset_flag, default=DEFAULT_DATASET,
                        help="MedMNIST flag, e.g. bloodmnist, breastmnist, or a 3D one: adrenalmnist3d, organmnist3d; "
                             "or a folder of your own images (PNG, JPEG, TIFF, BMP, DICOM) or volumes (NIfTI); or an "
                             "npz file in MedMNIST's layout (README 'Your own data')")
    parser.add_argument("--size", type=POSITIVE_INT, default=DEFAULT_SIZE,
                        help="image size: 28, 64, 128 or 224 (3D data sets: 28 or 64 voxels per side); a folder is "
                             "resized to it; an npz file's own size is used")
    parser.add_argument("--data-dir", default=None,
                        help=f"folder with the MedMNIST npz files (default {DEFAULT_DATA_DIR})")
    parser.add_argument(*(["--labels-from", "--labels"] if labels_alias else ["--labels-from"]), dest="labels_from",
                        default=None, metavar="CSV|folders|none",
                        help="a folder's labels: a CSV (path,label[,split]; several label columns: multi-label), "
                             "class subfolders, or none (default: subfolders when every image is in one)")
    parser.add_argument("--fit", default="pad", choices=FITS,
                        help="a folder's non-square images: pad (centred on black), crop (centre square) or stretch")
    parser.add_argument("--window", type=window, default=None, metavar="LOW,HIGH",
                        help="a folder's 16-bit, DICOM and NIfTI intensities mapped to 0-255 from this window (e.g. "
                             "CT soft tissue --window=-160,240 in HU) instead of each image's 0.5-99.5th percentiles")
    parser.add_argument("--data-storage", default="auto", choices=STORAGES,
                        help="memory: read the npz into RAM; mmap: decode it once into an uncompressed cache beside it "
                             "and memory-map that (for sets larger than RAM); auto: mmap above "
                             f"{IN_MEMORY_BYTES / 2**30:.0f} GiB of images")
    parser.add_argument("--seed", type=SEED, default=0, help="seeds Python, NumPy, torch and the augmentation")
    parser.add_argument("--accelerator", default="auto", choices=ACCELERATORS, help="auto: a GPU when there is one")
    parser.add_argument("--devices", type=devices, default="auto",
                        help="devices per node (GPUs, or CPU processes), or auto")
    parser.add_argument("--num-nodes", type=POSITIVE_INT, default=1,
                        help="machines of a multi-node run (SLURM, torchrun): --devices on each")
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS,
                        help="16-mixed and bf16-mixed on GPUs only (bf16 where the GPU supports it)")
    parser.checks.append(check_data_options)
    return parser


def train_parser(description: str, epochs: int, batch_size: int,
                 validate: tuple[tuple[str, ...], int, str] | None = None) -> Parser:
    """data_parser plus what every training run takes. `validate`: (option names, default, help) of the
    validation frequency (--val-every 1 unless given)."""
    parser = data_parser(description)
    add_config_options(parser)
    parser.add_argument("--epochs", type=POSITIVE_INT, default=epochs)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=batch_size,
                        help="capped at the number of training images")
    parser.add_argument("--samples", type=POSITIVE_INT, default=None, help="train on N random training images")
    parser.add_argument("--name", default=None, help="run name: the model is saved as models/<name>.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing models/<name>.ckpt")
    options, default, what = validate or (("--val-every",), 1, "validate every N epochs")
    parser.add_argument(*options, dest="val_every", type=POSITIVE_INT, default=default, help=what)
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run --name from its last checkpoint (same options)")
    parser.add_argument("--checkpoint-every-n-steps", type=POSITIVE_INT, default=None,
                        help="also save last.ckpt every N optimiser steps (it is always saved every epoch)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (GPU; first steps slower)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms only (cuDNN too): reproducible on GPU, slower")
    return parser


def add_samples_per_class(parser: Parser) -> None:
    parser.add_argument("--samples-per-class", type=POSITIVE_INT, default=None,
                        help="train on N random images of every class (balanced)")
    parser.checks.append(check_subset_options)


def check_subset_options(args: argparse.Namespace) -> None:
    if args.samples is not None and args.samples_per_class is not None:
        raise UserError("--samples and --samples-per-class exclude each other", "give only one")


def subset_suffix(samples: int | None, samples_per_class: int | None = None) -> str:
    """The study's naming: -<N>-samples (--samples) or -<N>-spc (--samples-per-class) appended to a run name."""
    if samples is not None:
        return f"-{samples}-samples"
    if samples_per_class is not None:
        return f"-{samples_per_class}-spc"
    return ""


def size_suffix(size: int) -> str:
    """Default run names carry the image size when it is not MedMNIST's original 28 (pretrain-<flag>-64), so runs
    of one data set at two sizes keep apart, and each stage finds the encoder of its own size."""
    return "" if size == DEFAULT_SIZE else f"-{size}"


def add_backbone_options(parser: Parser, when: str) -> None:
    """--backbone and --stem: the network built from scratch (`when` says when that is)."""
    parser.add_argument("--backbone", default=None, choices=list(BACKBONES),
                        help=f"encoder network {when} (default {DEFAULT_BACKBONE}; {DEFAULT_BACKBONE_3D} on 3D data sets)")
    parser.add_argument("--stem", default=None, choices=list(STEMS),
                        help=f"ResNet stem {when}: imagenet (7x7 stride 2 + max-pool, the study's; the default) or "
                             "small (3x3 stride 1, no max-pool: for 28-64 px images, several times the compute); "
                             "3D ResNets: the same in 3D")
    parser.add_argument("--resize", type=POSITIVE_INT, default=None,
                        help=f"upsample every image to N px on the device before the network {when} (e.g. 28 -> 64, "
                             "bilinear; --size picks the stored resolution instead)")
    parser.add_argument("--patch-topk", type=POSITIVE_INT, default=None, metavar="K",
                        help=f"ViTs {when}: the top-K patch head (models/topk_pool.py): the embedding is the "
                             "softmax-weighted mean of the K patch tokens a learned score ranks highest, and the scores "
                             "are a heat map (default: the class token)")


def checked_stem(backbone: str, stem: str | None) -> str | None:
    """--stem for `backbone`: its default when not given, a one-line error for a stem it does not have."""
    try:
        return check_stem(backbone, stem)
    except ValueError as err:
        raise UserError(f"--stem {stem}: {err}", "leave --stem out for this backbone") from None


def new_network(backbone: str | None, stem: str | None, channels: int, size: int, resize: int | None = None,
                dims: int = 2, patch_topk: int | None = None) -> dict:
    """The build_backbone options of a network built from scratch: --backbone (default the study's ResNet-18, or
    its 3D twin for volumes, `dims` 3), --stem and --resize, the dataset's channels and image size."""
    backbone = backbone or default_backbone(dims)
    if BACKBONES[backbone].dims != dims:
        kind = {2: "2D images", 3: "3D volumes"}
        fitting = [name for name, entry in BACKBONES.items() if entry.dims == dims]
        raise UserError(f"--backbone {backbone} reads {kind[BACKBONES[backbone].dims]} but the data set holds {kind[dims]}",
                        f"choose one of {', '.join(fitting)}")
    try:
        check_patch_topk(backbone, patch_topk, resize or size)
    except ValueError as err:
        raise UserError(f"--patch-topk {patch_topk}: {err}",
                        "use a ViT (--backbone vit_tiny or vit_small)" if "no patch tokens" in str(err)
                        else "choose a smaller K") from None
    return {"backbone": backbone, "stem": checked_stem(backbone, stem), "in_channels": channels, "size": size,
            "resize": resize, "patch_topk": patch_topk}
