"""What every test.py does first: resolve the checkpoint, check its kind, load the dataset."""
from __future__ import annotations

import json

from common.cli.options import DataOptions, replace
from common.cli.parsers import DEFAULT_SIZE, data_parser, resolved_data
from common.data.sources import is_flag
from common.data.datamodule import MedMNISTDataModule
from models.checkpoints import expect_kind, read_checkpoint, recorded_dataset
from utils import UserError, resolve_checkpoint


def test_parser(description: str):
    parser = data_parser(description)
    parser.set_defaults(dataset=None, size=None)
    parser.add_argument("--checkpoint", required=True, help="checkpoint path or run name of this stage")
    return parser


def open_checkpoint(options: DataOptions, checkpoint: str, stages: list[str], kinds: tuple[str, ...]):
    """(path, checkpoint dict, data module, options) for `checkpoint` (--checkpoint), a path or a run name of one of
    `stages`, whose kind must be one of `kinds`; `options` (test.py's data options) with --dataset and --size
    defaulting to the recorded ones, and a folder's --labels-from, --fit and --window to the run's."""
    path = resolve_checkpoint(checkpoint, stages, "--checkpoint")
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, path, kinds, "--checkpoint")
    dataset = options.dataset or recorded_dataset(ckpt, path)
    if dataset is None:
        raise UserError(f"{path.name} does not record its dataset", "pass --dataset")
    size = options.size or (ckpt.get("hyper_parameters") or {}).get("size") or DEFAULT_SIZE
    options = replace(options, dataset=dataset, size=size)
    if not is_flag(dataset):  # a folder: its labels, fit and window as the run recorded them, unless given (pad:
        #                       --fit's default)
        options = replace(options, **{option: value for option, value in recorded_data_options(path).items()
                                      if value is not None and getattr(options, option) in (None, "pad")})
    try:
        _, dataset, size = resolved_data(options.dataset, options.size, options.data_dir, options.labels_from,
                                         options.fit, options.window)
    except UserError as err:
        raise UserError(f"{path.name} was trained on --dataset {options.dataset}, which cannot be read now: {err}",
                        "pass --dataset") from None
    options = replace(options, dataset=dataset, size=size)
    data = MedMNISTDataModule(dataset, size, options.data_dir, seed=options.seed, storage=options.data_storage).load()
    return path, ckpt, data, options


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
