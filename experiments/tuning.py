"""What scripts/tune.py runs: an Optuna study over a pretraining method's hyperparameters.

Each trial is one pretraining run of the method's own command line (its options, checked as always), for
--budget-epochs epochs with the online kNN monitor every epoch. The monitor's validation AUROC is reported to Optuna
after each epoch (`PruneOnMonitor`: the median pruner stops trials below the median of earlier trials at the same
epoch) and its value at the end of the budget is the trial's objective; the test split is never read.

The study lives in an Optuna storage (a SQLite file by default), so a killed search resumes: the trials it finished
stay, and a trial whose process died (same machine: its process is gone; another machine: no heartbeat for
HEARTBEAT_GRACE seconds) is marked failed and its parameters run again.
"""
from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytorch_lightning as pl
from optuna.trial import TrialState

from common.cli.options import DataOptions, NetworkOptions, as_record
from common.cli.parsers import COMMAND_ONLY
from models.backbones import default_backbone
from common.augment.names import AUG_STRENGTH, default_augmentation
from pretrain.cli import pretrain_options, pretrain_parser
from pretrain.hparams import BATCH_SIZE, KNN_MONITOR, SHARED_SEARCH, MethodHparams
from utils import UserError, atomic_path, atomic_write_text, models_dir

OBJECTIVE = KNN_MONITOR[0]  # val/knn_auroc: the online kNN monitor's validation AUROC (labels of train and val)
FEW_LABEL = "val/few_label_auroc"  # --objective few-label: experiments.few_label's score (train and val only)
OBJECTIVES = {"knn": OBJECTIVE, "few-label": FEW_LABEL}
TUNE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune.py"  # what --n-jobs starts its workers with
# --objective few-label also searches which features to read (models.feature_choice), and with --search-backbone the
# network: the stages every searched network has (a ViT has 11, the CNNs 4)
FEATURES_SEARCH = ("choice", "last", "stage:1", "stage:2", "stage:3", "stages")
NETWORKS_SEARCH = {2: ("choice", "small_cnn", "resnet18-imagenet", "resnet18-small", "vit_tiny"),
                   3: ("choice", "small_cnn_3d", "resnet18_3d-imagenet")}
RESIZE_SEARCH = ("choice", 0, 64)  # 0: the data's own size; 64: upsampled on the device (--resize 64), 28 px data only
FEW_LABEL_MONITOR_EVERY = 5  # ours: the kNN monitor then picks the checkpoint only; every 5th epoch keeps its cost low
STARTUP_TRIALS = 3  # ours: the median pruner and TPE sampler act once 3 trials have finished; a third of the
#                     trials when there are more (Optuna's defaults, 5 and 10, exceed searches this small)
WARMUP_EPOCHS = 1  # ours: no trial is pruned on its first epoch's monitor (every trial is near chance there)
HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats in the storage
HEARTBEAT_GRACE = 180  # seconds without one before a trial of another machine counts as dead


@dataclass(frozen=True, kw_only=True)
class TuneOptions(DataOptions, NetworkOptions):
    """experiments/tune.py's options, typed."""
    method: str
    trials: int
    budget_epochs: int
    time_budget: float | None
    objective: str
    labels: int
    draws: int
    search_backbone: bool
    max_batch_size: int
    study_name: str | None
    storage: str | None
    n_jobs: int
    report: bool
    worker: int


class PruneOnMonitor(pl.Callback):
    """Reports the kNN monitor's value after each validation to the trial and stops it when Optuna's pruner says so
    (optuna.TrialPruned out of trainer.fit). Optuna's own PyTorchLightningPruningCallback (optuna-integration) does
    the same, but for the `lightning` package, whose Callback class is not `pytorch_lightning`'s."""

    def __init__(self, trial: optuna.trial.Trial, monitor: str = OBJECTIVE, prune: bool = True):
        self.trial, self.monitor, self.prune = trial, monitor, prune
        self.last: float | None = None  # the monitor at the last validation: the objective at the end

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.last = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(self.last, step=epoch)
        self.trial.set_user_attr("epochs", epoch + 1)
        if not self.prune:
            return
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} {self.last:.4f} after epoch {epoch + 1}: below the median")


# ------------------------------------------------------------------------------------------------ the search space

def batch_choices(max_batch: int, n_train: int) -> list[int]:
    """The batch sizes a trial may take: the shared choices up to --max-batch-size and the training set."""
    fitting = [b for b in SHARED_SEARCH["batch_size"][1:] if b <= min(max_batch, n_train)]
    return fitting or [min(max_batch, n_train)]


def search_space(method: type[MethodHparams], dims: int, max_batch: int, n_train: int, few_label: bool = False,
                 networks: bool = False, size: int = 28) -> dict[str, tuple]:
    """The method's search space for data of `dims` dimensions: volumes have one augmentation sequence. The
    few-label objective adds the features read; `networks` the backbone (and stem), and at 28 px --resize 64."""
    space = dict(method.search_space())
    space["batch_size"] = ("choice", *batch_choices(max_batch, n_train))
    if dims == 3:
        space.pop("aug")
    if few_label:
        space["features"] = FEATURES_SEARCH
    if networks:
        space["network"] = NETWORKS_SEARCH[dims]
        if dims == 2 and size == 28:
            space["resize"] = RESIZE_SEARCH
    return space


def suggest(trial: optuna.trial.Trial, space: dict[str, tuple]) -> dict:
    """One value per option of `space` from the trial."""
    params = {}
    for name, (kind, *values) in space.items():
        if kind == "log":
            params[name] = trial.suggest_float(name, values[0], values[1], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, values[0], values[1])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, values)
        else:
            raise ValueError(f"unknown kind {kind!r} of search option {name}")
    return params


def default_params(method: type[MethodHparams], space: dict[str, tuple], dims: int, n_train: int,
                   max_batch: int) -> dict:
    """The method's defaults, as the first trial of a new study: what the search has to beat."""
    defaults = {dest: action.default for dest, action in pretrain_parser(method).options().items()}
    defaults.update(lr=method.LR, aug=default_augmentation(dims), aug_strength=AUG_STRENGTH,
                    batch_size=min(BATCH_SIZE, max_batch, n_train))
    defaults.update(features="last", network=f"{default_backbone(dims)}-imagenet", resize=0)  # the study's network
    params = {name: defaults[name] for name in space}
    choices = space["batch_size"][1:]
    params["batch_size"] = max([b for b in choices if b <= params["batch_size"]] or [choices[0]])
    return params


def trial_lr(method: type[MethodHparams], lr: float, batch_size: int) -> float:
    """--lr of a trial: the searched rate as the method states its default, per LR_BATCH images where it scales."""
    return lr * batch_size / method.LR_BATCH if method.LR_BATCH else lr


def trial_values(method: type[MethodHparams], base: dict, params: dict, name: str, budget: int,
                 minutes: float | None = None, monitor_every: int = 1) -> dict:
    """The method's train.py options of one trial (dest -> value): `budget` epochs, or `minutes` of wall time
    (--time-budget)."""
    values = {**params, "lr": trial_lr(method, params["lr"], params["batch_size"])}
    length = {"time_budget": minutes} if minutes else {"epochs": budget}
    network = values.pop("network", None)
    if network is not None:  # "resnet18-small": --backbone resnet18 --stem small
        backbone, _, stem = network.partition("-")
        values.update(backbone=backbone, stem=stem or None)
    if values.get("resize") == 0:
        values["resize"] = None  # no --resize: trial_options counts it as given, so no recipe sets one
    return {**base, **length, "val_every": monitor_every, "name": name, "overwrite": True, **values}


def trial_options(method: type[MethodHparams], base: dict, params: dict, name: str, budget: int,
                  minutes: float | None = None, monitor_every: int = 1):
    """The PretrainOptions of one trial (trial_values): what the trial searched is its own, never --recipe's."""
    values = trial_values(method, base, params, name, budget, minutes, monitor_every)
    searched = {*params, *(("backbone", "stem") if "network" in params else ())} - {"network"}
    return pretrain_options(method, given=searched, **values)


# ---------------------------------------------------------------------------------------------------- the study

def open_study(name: str, storage_url: str, seed: int, trials: int, about: dict, worker: int = 0) -> optuna.Study:
    """The study `name` in the storage, created or loaded; a study made for another search is an error."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5: kept since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            storage_url, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=HEARTBEAT_GRACE,
            # a trial of another machine whose heartbeat stopped: failed, and its parameters run once more
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    startup = max(STARTUP_TRIALS, trials // 3)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed + worker, n_startup_trials=startup),  # workers draw apart
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=WARMUP_EPOCHS))
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", about)
    elif recorded != about:
        differs = ", ".join(f"{k} {recorded.get(k)} there, {about.get(k)} here" for k in about
                            if recorded.get(k) != about.get(k))
        raise UserError(f"study {name} in {storage_url} is another search ({differs})",
                        "give the same options to resume it, or a new --study-name")
    return study


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry_dead_trials(study: optuna.Study) -> list[int]:
    """Trials left running by a process of this machine that is gone (a killed search): marked failed, their
    parameters queued to run again. Returns their numbers. (Other machines' dead trials: by heartbeat.)"""
    host, retried = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and "pid" in attrs and not process_alive(attrs["pid"]):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            retried.append(trial.number)
    return retried


def objective_name(study: optuna.Study) -> str:
    """What the study maximises, as its tables name it: val/knn_auroc or val/few_label_auroc."""
    return OBJECTIVES[(study.user_attrs.get("search") or {}).get("objective", "knn")]


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {state.name.lower(): states.count(state) for state in TrialState}


def objective_function(method: type[MethodHparams], base: dict, space: dict, budget: int, study_name: str,
                       search=None, data=None):
    """The objective: one pretraining run of the trial's options; its monitor's last value, or with --objective
    few-label (`search`: tune.py's options) experiments.few_label's score of its checkpoint on `data`."""
    from pretrain.run import pretrain

    module = method.module_class()
    few_label = search is not None and search.objective == "few-label"
    minutes = search.time_budget if search is not None else None

    def objective(trial: optuna.trial.Trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = suggest(trial, space)
        name = f"{study_name}-trial-{trial.number}"
        monitor_every = FEW_LABEL_MONITOR_EVERY if few_label else 1
        options = trial_options(method, base, params, name, budget, minutes, monitor_every)
        trial.set_user_attr("run", name)
        trial.set_user_attr("options", {k: v for k, v in as_record(options).items() if k not in COMMAND_ONLY})
        pruning = PruneOnMonitor(trial, prune=not few_label)  # the kNN monitor is not the few-label objective
        print(f"\ntrial {trial.number}: " + ", ".join(f"{k} {format_value(v)}" for k, v in params.items()), flush=True)
        final = pretrain(module, options, callbacks=[pruning])
        if few_label:
            from experiments.few_label import few_label_score

            score = few_label_score(final, data, options.features, search.labels, search.draws, options.accelerator)
            trial.set_user_attr("few_label_aurocs", score["aurocs"])
            achieved = json.loads(final.with_suffix(".config.json").read_text()).get("time_budget") or {}
            if achieved.get("epochs_run") is not None:
                trial.set_user_attr("epochs", achieved["epochs_run"])
            return score["auroc"]
        if pruning.last is None or not math.isfinite(pruning.last):
            raise UserError(f"trial {trial.number} ended without a {OBJECTIVE}")
        return pruning.last

    return objective


def format_value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def optimize(study: optuna.Study, objective, trials: int, queued_only: bool = False) -> None:
    """Run trials until `trials` have finished (completed or pruned) in the study, counting every worker's; trials
    that fail (an exception) are recorded as such and do not count, up to `trials` failures. `queued_only`: only
    the queued trials (the defaults, trials to run again), which --n-jobs runs before its workers start: two
    processes could otherwise take the same one."""
    failures = 0
    while True:
        now = counts(study)
        if now["complete"] + now["pruned"] + now["running"] >= trials or failures >= trials:
            return
        if queued_only and not now["waiting"]:
            return
        before = now["fail"]
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except optuna.exceptions.UpdateFinishedTrialError as err:  # another machine's worker ran it too
            print(f"note: {err}", file=sys.stderr)
        failures += counts(study)["fail"] > before


def run_workers(argv: list[str], n_jobs: int) -> None:
    """--n-jobs N: N processes of this command (each --n-jobs 1, its share of the cores, its own sampler seed) on
    the same study."""
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's intra-op threads of each worker
    workers = [subprocess.Popen([sys.executable, str(TUNE_SCRIPT), *argv, "--n-jobs", "1",
                                 "--worker", str(index)], env=env) for index in range(1, n_jobs + 1)]
    codes = [worker.wait() for worker in workers]
    if any(codes):
        raise UserError(f"{sum(1 for c in codes if c)} of {n_jobs} workers failed (exit codes {codes})")


# ---------------------------------------------------------------------------------------------------- the report

def last_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """A completed trial's objective; a pruned one's last reported value; none for a failed or running one (what it
    reported along the way, e.g. the kNN monitor of a few-label trial, is not its objective)."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.state != TrialState.PRUNED:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def trial_rows(study: optuna.Study) -> list[dict]:
    names = sorted({name for trial in study.trials for name in trial.params})
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), objective_name(study): last_value(trial),
                     "epochs": trial.user_attrs.get("epochs"), "seconds": seconds,
                     **{name: trial.params.get(name) for name in names}})
    return rows


def best_config(study: optuna.Study, method: type[MethodHparams]) -> tuple[optuna.trial.FrozenTrial, dict]:
    """The best completed trial and its options as a --config file holds them (named <study>-best)."""
    best = study.best_trial
    options = dict(best.user_attrs["options"])
    options["name"] = f"{study.study_name}-best"
    return best, options


def write_report(study: optuna.Study, method: type[MethodHparams], folder: Path) -> dict:
    """best.yaml (a --config file), trials.csv and trials.md, history.png and importances.png in `folder`."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    if not rows:
        raise UserError(f"study {study.study_name} has no trials yet", "run the search first")
    keys = list(rows[0])
    with atomic_path(folder / "trials.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(folder / "trials.md", markdown_table(rows, keys))
    written = {"trials": folder / "trials.md"}
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if completed:
        best, options = best_config(study, method)
        length = (f"{options['epochs']} epoch(s)" if options.get("epochs") else
                  f"{options.get('time_budget')} minute(s) (--time-budget)")
        header = (f"# Best of study {study.study_name}: trial {best.number}, {objective_name(study)} {best.value:.4f} "
                  f"after {length}.\n# Rerun: python pretrain/{method.NAME}/train.py --config "
                  f"{folder / 'best.yaml'} [--epochs N --name NAME]\n")
        atomic_write_text(folder / "best.yaml", header + yaml.safe_dump(options, sort_keys=False))
        written["best"] = folder / "best.yaml"
        plot_history(study, folder / "history.png")
        written["history"] = folder / "history.png"
        if len({t.value for t in completed}) >= 2:  # fANOVA apportions the objective's variance: it needs some
            plot_importances(study, folder / "importances.png")
            written["importances"] = folder / "importances.png"
    return written


def markdown_table(rows: list[dict], keys: list[str]) -> str:
    def cell(value):
        return "" if value is None else format_value(value) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_history(study: optuna.Study, path: Path) -> None:
    """Each trial's objective (pruned: its last reported value, hollow) and the best so far."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    best, best_line = -math.inf, []
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            ax.plot(trial.number, trial.value, "o", color="tab:blue")
            best = max(best, trial.value)
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            ax.plot(trial.number, last_value(trial), "o", mfc="none", color="tab:red")
        best_line.append((trial.number, best if best > -math.inf else math.nan))
    ax.step(*zip(*best_line), where="post", color="tab:green", label="best so far")
    ax.plot([], [], "o", color="tab:blue", label="completed")
    ax.plot([], [], "o", mfc="none", color="tab:red", label="pruned (last value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective_name(study)} (validation)")
    ax.set_title(f"{study.study_name}: optimisation history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_importances(study: optuna.Study, path: Path) -> None:
    """Optuna's parameter importances by fANOVA (a random forest over the completed trials; Optuna 5's default,
    PED-ANOVA, degenerates with as few trials as a small search has) as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def study_folder(method: type[MethodHparams], study_name: str) -> Path:
    """Where a study's database (by default) and report go: the method's models/ folder, beside its trials."""
    return models_dir(method.NAME) / study_name


# ------------------------------------------------------------------------------------------------------ the run

def trial_base_values(args: TuneOptions) -> dict:
    """The options every trial shares: the data, the hardware, the seed and the network."""
    from common.data.sources import lookup

    return {**lookup(args.dataset, args.size, args.data_dir).values(), "data_storage": args.data_storage,
            "seed": args.seed, "accelerator": args.accelerator, "devices": args.devices, "num_nodes": args.num_nodes,
            "precision": args.precision, "backbone": args.backbone, "stem": args.stem, "resize": args.resize,
            "patch_topk": args.patch_topk}


def run(args: TuneOptions, argv: list[str]) -> dict:
    """scripts/tune.py: open (or resume) the study, run the trials it still needs, write the report."""
    from common.cli.parsers import size_suffix
    from common.data.datamodule import MedMNISTDataModule
    from common.data.sources import short_name
    from pretrain import method_hparams

    method = method_hparams(args.method)
    name = args.study_name or f"tune-{method.NAME}-{short_name(args.dataset)}{size_suffix(args.size)}"
    folder = study_folder(method, name)
    storage = args.storage or f"sqlite:///{folder / 'study.db'}"
    data = MedMNISTDataModule(args.dataset, args.size, args.data_dir, storage=args.data_storage).load()
    data.require_labels("tune.py's objective (the kNN monitor or the few-label probe)")
    dims, n_train = data.dims, data.num_train()
    few_label = args.objective == "few-label"
    space = search_space(method, dims, args.max_batch_size, n_train, few_label, args.search_backbone, args.size)
    base = trial_base_values(args)
    trial_options(method, base, default_params(method, space, dims, n_train, args.max_batch_size), f"{name}-check",
                  args.budget_epochs, args.time_budget)  # checked once
    about = {"method": method.NAME, "dataset": args.dataset, "size": args.size, "budget_epochs": args.budget_epochs,
             "seed": args.seed, "max_batch_size": args.max_batch_size,
             **{k: getattr(args, k) for k in ("backbone", "stem", "resize", "patch_topk")},
             **({"objective": args.objective, "labels": args.labels, "draws": args.draws} if few_label else {}),
             **({"time_budget": args.time_budget} if args.time_budget else {}),
             **({"search_backbone": True} if args.search_backbone else {})}
    if args.storage is None:
        folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial below instead
    study = open_study(name, storage, args.seed, args.trials, about, args.worker)
    if not args.report:
        retried = [] if args.worker else retry_dead_trials(study)
        if retried:
            print(f"trial(s) {', '.join(map(str, retried))} were left running by a process that is gone: marked "
                  "failed, their parameters run again")
        if not study.trials:
            study.enqueue_trial(default_params(method, space, dims, n_train, args.max_batch_size),
                                user_attrs={"defaults": True})
        now = counts(study)
        if not args.worker:
            print(f"study {name} ({storage}): {now['complete']} completed, {now['pruned']} pruned, {now['fail']} "
                  f"failed; {max(0, args.trials - now['complete'] - now['pruned'])} of {args.trials} trials to run, "
                  + (f"{args.time_budget:g} minutes each" if args.time_budget else f"{args.budget_epochs} epochs each")
                  + (f"; objective: {args.labels} labels per class, {args.draws} draws, validation AUROC"
                     if few_label else ""), flush=True)
        objective = logged(objective_function(method, base, space, args.budget_epochs, name, args, data),
                           OBJECTIVES[args.objective])
        if args.n_jobs > 1:
            optimize(study, objective, args.trials, queued_only=True)
            run_workers(argv, args.n_jobs)
        else:
            optimize(study, objective, args.trials)
    if args.worker:
        return {}
    written = write_report(study, method, folder)
    if few_label:
        written["untrained"] = write_untrained(folder, data, space, args)
    print("\n" + (folder / "trials.md").read_text(), end="")
    if "best" in written:
        best = study.best_trial
        print(f"best: trial {best.number}, {objective_name(study)} {best.value:.4f}: "
              + ", ".join(f"{k} {format_value(v)}" for k, v in best.params.items()))
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return written


def write_untrained(folder: Path, data, space: dict, args: TuneOptions) -> Path:
    """untrained.md: the few-label objective on random-init networks (the searched ones, else --backbone's), read at
    every searched feature: the reference every trial's score stands beside. Prints the strongest."""
    from experiments.few_label import untrained_scores

    tags = list(space["network"][1:]) if "network" in space else [f"{args.backbone or default_backbone(data.dims)}"
                                                                   + (f"-{args.stem}" if args.stem else "")]
    networks = {}
    for tag in tags:
        backbone, _, stem = tag.partition("-")
        networks[tag] = {"backbone": backbone, "stem": stem or None, "in_channels": data.num_channels,
                         "size": data.size}
    features = list(space.get("features", ("choice", "last"))[1:])
    rows = untrained_scores(data, networks, features, args.labels, args.draws, args.accelerator, args.seed)
    rows.sort(key=lambda r: -r["auroc"])
    lines = ["| random-init network | features | val AUROC (mean of draws) | per draw |", "|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['features']} | {r['auroc']:.3f} | {' '.join(f'{a:.3f}' for a in r['aurocs'])} |"
              for r in rows]
    path = folder / "untrained.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"strongest untrained features, the same objective: {rows[0]['network']} {rows[0]['features']} "
          f"{rows[0]['auroc']:.4f}")
    return path


def logged(objective, label: str = OBJECTIVE):
    """The objective, with one line per finished trial."""
    def run_trial(trial: optuna.trial.Trial) -> float:
        try:
            value = objective(trial)
        except optuna.TrialPruned as pruned:
            print(f"\ntrial {trial.number} pruned: {pruned}", flush=True)  # below the progress bar
            raise
        except Exception as err:
            print(f"\ntrial {trial.number} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            raise
        print(f"\ntrial {trial.number}: {label} {value:.4f}", flush=True)
        return value

    return run_trial
