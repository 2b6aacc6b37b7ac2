"""A pretraining run, as the command line's options say (pretrain.cli parsed and checked them)."""
from __future__ import annotations

from pathlib import Path

from common.cli import new_network, size_suffix
from common.data import MedMNISTDataModule
from common.trainer import check_output, fit_and_save
from models.backbones import backbone_options
from models.checkpoints import PRETRAINED, expect_kind, our_state_dict, read_checkpoint, submodule_state
from pretrain.cli import checked_sync_batchnorm
from pretrain.hparams import BATCH_SIZE, KNN_MONITOR
from utils import UserError, resolve_encoder, seed_everything


def encoder_options(args, data: MedMNISTDataModule, init: Path | None, ckpt: dict | None) -> dict:
    """backbone, stem, in_channels, size and resize: the --init checkpoint's (`ckpt`; --resize may change it), or
    the options' and the dataset's."""
    if init is None:
        return new_network(args.backbone, args.stem, data.num_channels, data.size, args.resize, data.dims,
                           args.patch_topk)
    options = backbone_options(dict(ckpt.get("hyper_parameters") or {}))
    network = options["backbone"] + (f", {options['stem']} stem" if options["stem"] else "")
    for option, given in (("backbone", args.backbone), ("stem", args.stem), ("patch-topk", args.patch_topk)):
        if given is not None and given != options[option.replace("-", "_")]:
            raise UserError(f"--{option} {given} differs from the --init checkpoint's network ({network})",
                            f"leave --{option} out: the encoder's network comes from {init.name}")
    return {**options, "size": data.size, "resize": args.resize or options["resize"]}


def pretrain(method, args, callbacks: list | tuple = (), **method_options) -> Path:
    """Pretrain `method` (a PretrainModule subclass) as `args` (pretrain.cli.pretrain_parser's, checked) say;
    returns the saved `<name>.ckpt`. `callbacks`: more Lightning callbacks (scripts/tune.py's pruning)."""
    name = args.name or f"{method.RUN_PREFIX}-{args.dataset}{size_suffix(args.size)}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, batch_size=BATCH_SIZE, samples=args.samples,
                              seed=args.seed, drop_last=True, storage=args.data_storage).load()
    n_train = data.num_train()
    if args.batch_size is not None and args.batch_size > n_train:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {n_train} training images",
                        f"use --batch-size {n_train} or less")
    data.batch_size = args.batch_size = args.batch_size or min(BATCH_SIZE, n_train)  # recorded as it ran
    init = resolve_encoder(args.init, "--init", also=("resnet",)) if args.init else None
    ckpt = read_checkpoint(init) if init else None
    if ckpt is not None:
        expect_kind(ckpt, init, (PRETRAINED, "resnet"), "--init")
    seed_everything(args.seed)
    model = method(**encoder_options(args, data, init, ckpt), dataset=args.dataset, aug=args.aug,
                   aug_strength=args.aug_strength, optimizer=args.optimizer, lr=args.lr,
                   weight_decay=args.weight_decay, batch_size=data.batch_size,
                   num_train=n_train, max_epochs=args.epochs, seed=args.seed, init=str(init) if init else None,
                   **method_options)
    if ckpt is not None:  # the encoder's weights, from any method's (or a finetuned) checkpoint
        model.load_encoder_state(submodule_state(our_state_dict(ckpt), "encoder"), f"--init {init.name}")
    check_output(method.NAME, name, args.overwrite, args.resume)
    args.init = str(init) if init else None  # the file it was, should the name later mean another
    sync_batchnorm = checked_sync_batchnorm(method, args)  # the method's default on this machine's devices
    about = {"method": method.NAME, "data_file": str(data.path), "network": model.encoder.backbone_options,
             "sync_batchnorm": sync_batchnorm}
    monitor, mode = KNN_MONITOR if args.select_by == "knn" else method.OWN_MONITOR or (None, "max")
    return fit_and_save(method.NAME, name, args, model, data, monitor=monitor, mode=mode, about=about,
                        callbacks=callbacks, trainer_options={"sync_batchnorm": sync_batchnorm})
