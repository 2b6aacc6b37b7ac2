"""What every test.py does first: resolve the checkpoint, check its kind, load the dataset."""
from __future__ import annotations

import json

from common.cli.parsers import DEFAULT_SIZE, data_parser, resolve_data
from common.data.sources import is_flag
from common.data.datamodule import MedMNISTDataModule
from models.checkpoints import expect_kind, read_checkpoint, recorded_dataset
from utils import UserError, resolve_checkpoint


def test_parser(description: str):
    parser = data_parser(description)
    parser.set_defaults(dataset=None, size=None)
    parser.add_argument("--checkpoint", required=True, help="checkpoint path or run name of this stage")
    return parser


def open_checkpoint(args, stages: list[str], kinds: tuple[str, ...]):
    """(path, checkpoint dict, data module) for `--checkpoint`, a path or a run name of one of `stages`,
    whose kind must be one of `kinds`; --dataset and --size default to the recorded ones."""
    path = resolve_checkpoint(args.checkpoint, stages, "--checkpoint")
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, path, kinds, "--checkpoint")
    args.dataset = args.dataset or recorded_dataset(ckpt, path)
    if args.dataset is None:
        raise UserError(f"{path.name} does not record its dataset", "pass --dataset")
    args.size = args.size or (ckpt.get("hyper_parameters") or {}).get("size") or DEFAULT_SIZE
    if not is_flag(args.dataset):  # a folder: its labels, fit and window as the run recorded them, unless given
        for option, value in recorded_data_options(path).items():
            if value is not None and getattr(args, option) in (None, "pad"):  # pad: --fit's default
                setattr(args, option, value)
    try:
        resolve_data(args)
    except UserError as err:
        raise UserError(f"{path.name} was trained on --dataset {args.dataset}, which cannot be read now: {err}",
                        "pass --dataset") from None
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, seed=args.seed, storage=args.data_storage).load()
    return path, ckpt, data


def recorded_data_options(path) -> dict:
    """--labels-from, --fit and --window of the run that wrote checkpoint `path` (its config.json), where recorded."""
    try:
        options = json.loads(path.with_suffix(".config.json").read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {key: options.get(key) for key in ("labels_from", "fit", "window") if key in options}


def check_classes(module, data: MedMNISTDataModule, path) -> None:
    if module.hparams.num_classes != data.num_classes:
        raise UserError(f"{path.name} predicts {module.hparams.num_classes} classes but {data.flag} has "
                        f"{data.num_classes}", "pass the --dataset it was trained on")
