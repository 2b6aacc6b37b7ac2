"""A pretraining run, as its options say (pretrain.hparams.PretrainOptions: pretrain.cli parsed and checked them)."""
from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path

import torch

from common.cli.options import as_record, replace
from common.cli.parsers import new_network, size_suffix
from common.data.datamodule import MedMNISTDataModule
from common.data.sources import short_name
from common.evaluation.features import extract_features
from common.data.normalize import normalize, to_unit
from common.training.time_budget import (CALIBRATION_SHARE, FEATURE_SAMPLE, Calibration, TimeBudget, calibration_device,
                                         preserved_rng, timed_save, timed_steps)
from common.training.options import TrainerOptions
from common.training.trainer import check_output, fit_and_save
from models.backbones import backbone_options
from models.checkpoints import PRETRAINED, expect_kind, our_state_dict, read_checkpoint, submodule_state
from pretrain.hparams import BATCH_SIZE, EPOCHS, KNN_MONITOR, PretrainOptions, checked_sync_batchnorm
from utils import UserError, models_dir, resolve_encoder, seed_everything

AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}  # the precisions that train under autocast


def encoder_options(options: PretrainOptions, data: MedMNISTDataModule, init: Path | None, ckpt: dict | None) -> dict:
    """backbone, stem, in_channels, size and resize: the --init checkpoint's (`ckpt`; --resize may change it), or
    the options' and the dataset's."""
    if init is None:
        return new_network(options.backbone, options.stem, data.num_channels, data.size, options.resize, data.dims,
                           options.patch_topk)
    recorded = backbone_options(dict(ckpt.get("hyper_parameters") or {}))
    network = recorded["backbone"] + (f", {recorded['stem']} stem" if recorded["stem"] else "")
    for option, given in (("backbone", options.backbone), ("stem", options.stem), ("patch-topk", options.patch_topk)):
        if given is not None and given != recorded[option.replace("-", "_")]:
            raise UserError(f"--{option} {given} differs from the --init checkpoint's network ({network})",
                            f"leave --{option} out: the encoder's network comes from {init.name}")
    return {**recorded, "size": data.size, "resize": options.resize or recorded["resize"]}


def pretrain(method, options: PretrainOptions, callbacks: list | tuple = ()) -> Path:
    """Pretrain `method` (a PretrainModule subclass) as `options` say (options.extra: the method's own options); returns
    the saved `<name>.ckpt`. `callbacks`: more Lightning callbacks (scripts/tune.py's pruning)."""
    name = options.name or f"{method.RUN_PREFIX}-{short_name(options.dataset)}{size_suffix(options.size)}"
    data = MedMNISTDataModule(options.dataset, options.size, options.data_dir, batch_size=BATCH_SIZE,
                              samples=options.samples, seed=options.seed, drop_last=True,
                              storage=options.data_storage).load()
    extra = pool_extra(data, options) if options.extra_unlabelled else []
    monitored = monitor_data(data, options) if options.monitor_dataset else None
    if data.unlabelled and monitored is None and options.select_by == "knn":
        print(f"note: {data.flag} has no labels, so no kNN monitor: the best checkpoint is chosen by "
              f"{method.OWN_MONITOR[0] if method.OWN_MONITOR else 'the last epoch'} (--select-by contrastive; "
              f"--monitor-dataset names a labelled set for the monitor)")
        options = replace(options, select_by="contrastive")
    n_train = data.num_train()
    fitted = recipe_fitted(options, n_train, data.size)
    if fitted.batch_size != options.batch_size:
        print(f"note: the recipe's batch of {options.batch_size} is capped at the {n_train} training images")
    options = fitted
    if options.batch_size is not None and options.batch_size > n_train:
        raise UserError(f"--batch-size {options.batch_size} is larger than the {n_train} training images",
                        f"use --batch-size {n_train} or less")
    options = replace(options, batch_size=options.batch_size or min(BATCH_SIZE, n_train))  # recorded as it ran
    data.batch_size = options.batch_size
    init = resolve_encoder(options.init, "--init", also=("resnet",)) if options.init else None
    ckpt = read_checkpoint(init) if init else None
    if ckpt is not None:
        expect_kind(ckpt, init, (PRETRAINED, "resnet"), "--init")
    seed_everything(options.seed)
    model = method(**encoder_options(options, data, init, ckpt), dataset=options.dataset, aug=options.aug,
                   aug_strength=options.aug_strength, optimizer=options.optimizer, lr=options.lr,
                   weight_decay=options.weight_decay, batch_size=data.batch_size,
                   num_train=n_train, max_epochs=options.epochs or EPOCHS,  # --time-budget: replaced at set-up
                   seed=options.seed, init=str(init) if init else None, features=options.features,
                   **options.extra)
    if ckpt is not None:  # the encoder's weights, from any method's (or a finetuned) checkpoint
        model.load_encoder_state(submodule_state(our_state_dict(ckpt), "encoder"), f"--init {init.name}")
    check_output(method.NAME, name, options.overwrite, options.resume)
    options = replace(options, init=str(init) if init else None)  # the file it was, should the name later mean another
    # the method's default on this machine's devices
    sync_batchnorm = checked_sync_batchnorm(method, options.accelerator, options.sync_batchnorm)
    about = {"method": method.NAME, **data.about(), "network": model.encoder.backbone_options,
             "sync_batchnorm": sync_batchnorm, "from_recipe": list(options.from_recipe),
             **({"extra_unlabelled": extra} if extra else {}),
             **({"monitor_dataset": monitored} if monitored else {})}
    monitor, mode = selection_rule(method, options.select_by)
    trainer_options = {"sync_batchnorm": sync_batchnorm}
    if options.time_budget is not None:
        budget = time_budget(model, data, options, models_dir(method.NAME))
        # max_epochs: until its set-up plans them
        callbacks, trainer_options["max_epochs"] = [*callbacks, budget], model.hparams.max_epochs
        about["time_budget"] = budget.record  # the same dict: the callback adds the plan and what the run achieved
    return fit_and_save(method.NAME, name, TrainerOptions.of(options), as_record(options), model, data, monitor=monitor,
                        mode=mode, about=about, callbacks=callbacks, trainer_options=trainer_options)


def selection_rule(method, select_by: str) -> tuple[str | None, str]:
    """(metric, mode) that picks the saved checkpoint for --select-by; metric None: the last epoch's."""
    if select_by == "knn":
        return KNN_MONITOR
    if select_by == "contrastive" and method.OWN_MONITOR is not None:
        return method.OWN_MONITOR
    return None, "max"


def recipe_fitted(options: PretrainOptions, n_train: int, size: int) -> PretrainOptions:
    """The recipe's options fitted to the data (a given option is never changed): its batch at most the `n_train`
    training images (as BATCH_SIZE is), its --resize (an upsampling for small images) dropped for images of `size`
    as large or larger."""
    changes = {}
    if "batch_size" in options.from_recipe and options.batch_size and options.batch_size > n_train:
        changes["batch_size"] = n_train
    if "resize" in options.from_recipe and options.resize and size >= options.resize:
        changes["resize"] = None
    return replace(options, **changes) if changes else options


def other_source(text: str, option: str, data: MedMNISTDataModule, options: PretrainOptions,
                 labels: str | None = "none"):
    """(data module, record) of another source beside --dataset (`option` names it in messages): of the same kind
    and size as `data`; its record has its md5 (a folder: its manifest digest)."""
    from common.data.sources import resolve
    from common.training.trainer import file_md5

    source = resolve(text, data.size, options.data_dir, labels, options.fit, options.window)
    if source.dims != data.dims or source.size != data.size:
        kind = {2: "images", 3: "volumes"}
        raise UserError(f"{option} {text} holds {kind[source.dims]} of {source.size} per side but "
                        f"{data.flag} holds {kind[data.dims]} of {data.size}",
                        "give a source of the same kind, at the same --size")
    other = MedMNISTDataModule(text, data.size, options.data_dir, storage=options.data_storage).load()
    md5 = source.digest if source.kind == "folder" else file_md5(source.path)
    return other, {**source.record(), "md5": md5}


def as_channels(images: torch.Tensor, channels: int, what: str | None = None) -> torch.Tensor:
    """uint8 images with `channels` channels: colour -> grey by luminance (as the encoders' grey stems read it),
    grey -> colour repeated, with a note naming `what` was converted (none without it); unchanged when they
    already match."""
    from models.stem import LUMA

    if images.shape[1] == channels:
        return images
    if channels == 1:
        weights = torch.tensor(LUMA).view(1, 3, *[1] * (images.ndim - 2))
        converted = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    else:
        converted = images.expand(-1, channels, *images.shape[2:]).contiguous()
    if what:
        print(f"note: {what}: {images.shape[1]}-channel images converted to {channels} "
              f"({'luminance' if channels == 1 else 'grey repeated'})")
    return converted


def monitor_data(data: MedMNISTDataModule, options: PretrainOptions) -> dict:
    """--monitor-dataset: its train (the bank) and val (the queries) splits serve the kNN monitor of pretraining
    on `data` (data.monitor); returns what the record says of it."""
    other, record = other_source(options.monitor_dataset, "--monitor-dataset", data, options, labels=None)
    other.require_labels("--monitor-dataset (the kNN monitor)")
    what = f"--monitor-dataset {other.flag}"
    data.monitor = other
    for split in ("train", "val"):
        images, labels = other.splits[split]
        other.splits[split] = as_channels(images, data.num_channels, what if split == "train" else None), labels
    print(f"the kNN monitor reads {other.flag}: {len(other.splits['train'][0])} training images as its bank, "
          f"{len(other.splits['val'][0])} validation images as its queries")
    return {**record, "classes": other.num_classes}


def pool_extra(data: MedMNISTDataModule, options: PretrainOptions) -> list[dict]:
    """--extra-unlabelled: the training images of each source added to `data`'s for pretraining (grey and colour
    converted to `data`'s channels, a note saying so); returns what the record says of each source."""
    extras, records = [], []
    for text in options.extra_unlabelled:
        other, record = other_source(text, "--extra-unlabelled", data, options)
        images = as_channels(other.splits["train"][0], data.num_channels, f"--extra-unlabelled {other.flag}")
        extras.append(images.contiguous())
        records.append({**record, "train_images": len(images)})
    data.pool(extras)
    print(f"pretraining on {data.num_train()} images: {len(data.splits['train'][0])} of {data.flag} and "
          + ", ".join(f"{r['train_images']} of {r['name']}" for r in records))
    return records


def time_budget(model, data: MedMNISTDataModule, options: PretrainOptions, folder: Path) -> TimeBudget:
    """--time-budget's Lightning callback, its clock started now: the run calibrated, its epochs planned at the
    Trainer's set-up (--epochs caps them when given)."""
    started = time.monotonic()
    calibration = calibrate(model, data, str(options.accelerator), str(options.precision), folder, started,
                            compile_encoder=options.compile, budget_s=60 * options.time_budget)
    every_n_steps = options.checkpoint_every_n_steps
    saves = 1 + (len(data.train_dataloader()) / every_n_steps if every_n_steps else 0)  # last.ckpt, every epoch
    return TimeBudget(options.time_budget, started, calibration, data.num_train(), data.batch_size, options.val_every,
                      saves, cap=options.epochs)


def calibrate(model, data: MedMNISTDataModule, accelerator: str, precision: str, folder: Path,
              started: float, compile_encoder: bool = False, budget_s: float | None = None) -> Calibration:
    """The run's own costs, timed on a copy of `model` (its weights, queue and generators, and every random state,
    stay as they are): training steps, one validation, one checkpoint save (in `folder`). With `compile_encoder`
    (--compile) the copy's encoder is compiled as fit_and_save compiles the run's: the compilation falls in the
    warm-up, whose extra seconds the plan counts again for the run."""
    device = calibration_device(accelerator)
    with preserved_rng(device):
        twin = copy.deepcopy(model).to(device)
        twin.configure_model()
        if compile_encoder:
            twin.encoder.compile()
        (optimizer,), _ = twin.configure_optimizers()
        steps = CalibrationSteps(twin, optimizer, data, device, precision)
        seconds_per_step, warmup_extra = timed_steps(steps.train, device,
                                                     limit_s=CALIBRATION_SHARE * budget_s if budget_s else None)
        validation_s, validation_warmup = steps.validation_seconds()
        checkpoint_s = timed_save({"state_dict": twin.state_dict(), "optimizer_states": [optimizer.state_dict()]},
                                  folder)
    del twin, optimizer, steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Calibration(seconds_per_step, warmup_extra + validation_warmup, validation_s, checkpoint_s,
                       time.monotonic() - started)


class CalibrationSteps:
    """A pretraining module's steps outside a Trainer, on its own generators: the views of a batch as
    PretrainModule.on_after_batch_transfer makes them, the forward under the run's precision as Lightning runs it."""

    def __init__(self, module, optimizer, data: MedMNISTDataModule, device: torch.device, precision: str):
        self.module, self.optimizer, self.data, self.device, self.precision = module, optimizer, data, device, precision
        self.batches = itertools.cycle(data.train_dataloader())  # the run's first batches, again when it has fewer

    def views(self, images: torch.Tensor, split: str) -> torch.Tensor:
        x, generator = to_unit(images.to(self.device)), self.module.generator(split)
        pair = torch.cat([self.module.augment(x, generator), self.module.augment(x, generator)])
        return normalize(pair).contiguous(memory_format=self.module.memory_format)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=AUTOCAST.get(self.precision), enabled=self.precision in AUTOCAST)

    def train(self) -> None:
        """One optimisation step on the next training batch."""
        images, labels = next(self.batches)
        batch = self.views(images, "train"), labels
        self.module.train()
        with self.autocast():
            loss = self.module.training_step(batch, 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def validation_seconds(self) -> tuple[float, float]:
        """(seconds of one validation, its first call's seconds beyond a steady one): the method's val loop (one
        batch timed, times the batches) and the kNN monitor's encoding of the training and validation images
        (FEATURE_SAMPLE of them timed), each after one untimed call."""
        images, labels = next(iter(self.data.val_dataloader()))

        @torch.no_grad()
        def val_step() -> None:
            batch = self.views(images, "val"), labels
            with self.autocast():
                self.module.validation_step(batch, 0)

        self.module.eval()
        val_step_s, val_warmup = timed_steps(val_step, self.device, warmup=1, steps=1)
        monitored = self.data.monitor or self.data  # --monitor-dataset's images, when given
        (train_images, _), (val_images, _) = monitored.splits["train"], monitored.splits["val"]
        sample = train_images[:FEATURE_SAMPLE]
        encode_s, encode_warmup = timed_steps(lambda: extract_features(self.module.encoder, sample, self.device),
                                              self.device, warmup=1, steps=1)
        images_encoded = len(train_images) + len(val_images)
        validation_s = val_step_s * len(self.data.val_dataloader()) + encode_s * images_encoded / len(sample)
        return validation_s, val_warmup + encode_warmup
