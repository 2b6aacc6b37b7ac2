"""Which features of an encoder a probe, the kNN monitor or a reference reads (`--features`), without torch.

    last          the network's own output (today's: a ResNet's pooled layer4, the small CNN's pooled 4th block, a
                  ViT's class token)
    stage:K       the globally average-pooled output of stage K (1 = the first): a ResNet's layerK, the small CNN's
                  K-th conv block, a ViT's K-th transformer block (its patch tokens averaged)
    stages        every stage pooled, concatenated (first to last)
    stages:I-J    stages I to J pooled, concatenated; stages:I,J,... those stages
    best          (the probe and the label-efficiency command only) the candidate (`candidates`) whose L-BFGS probe
                  on the labelled training images scores best on the validation split, as the strongest untrained
                  reference is chosen (downstream/logistic_regression/strongest.py); the probe records what it chose

The best layer to read depends on the data and the task (Bordes et al. 2022, "Guillotine regularization"): on
small grey images a random-init small CNN's pooled first block beats every network's last layer. A spec is kept as
its canonical text (`canonical`), which checkpoints and run records store.
"""
from __future__ import annotations

import argparse

LAST, STAGE, STAGES = "last", "stage", "stages"
BEST = "best"  # chosen on val among `candidates`: not a spec of stages, resolved before any network reads it
DEFAULT = LAST


def parse(text: str) -> tuple[int, ...] | None:
    """The stages a spec reads, 1-based and in order (None: the network's own output); a ValueError for a bad one."""
    text = text.strip()
    if text == LAST:
        return None
    if text == STAGES:
        return ()  # every stage: resolved against the network by `resolve`
    kind, _, rest = text.partition(":")
    if kind == STAGE and rest.isdigit() and int(rest) >= 1:
        return (int(rest),)
    if kind == STAGES and rest:
        if "-" in rest:
            low, _, high = rest.partition("-")
            if low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high):
                return tuple(range(int(low), int(high) + 1))
        else:
            parts = rest.split(",")
            if all(p.isdigit() and int(p) >= 1 for p in parts) and len(set(parts)) == len(parts):
                return tuple(sorted(int(p) for p in parts))
    raise ValueError(f"unknown features {text!r} (choose {LAST}, {STAGE}:K, {STAGES}, {STAGES}:I-J or {STAGES}:I,J,...)")


def canonical(text: str) -> str:
    """The spec's one spelling: 'stages:1,2,3' -> 'stages:1-3', 'stage:02' -> 'stage:2'."""
    stages = parse(text)
    if stages is None:
        return LAST
    if stages == ():
        return STAGES
    if len(stages) == 1 and not text.strip().startswith(f"{STAGES}:"):
        return f"{STAGE}:{stages[0]}"
    if stages == tuple(range(stages[0], stages[-1] + 1)):
        return f"{STAGES}:{stages[0]}-{stages[-1]}"
    return f"{STAGES}:{','.join(map(str, stages))}"


def resolve(text: str, count: int) -> tuple[int, ...] | None:
    """The stages `text` reads of a network with `count` stages (None: its own output); a ValueError naming the
    range for a stage it lacks."""
    stages = parse(text)
    if stages == ():
        return tuple(range(1, count + 1))
    if stages is not None and stages[-1] > count:
        raise ValueError(f"--features {text}: the network has {count} stages (1 to {count})")
    return stages


def candidates(count: int) -> list[str]:
    """What the strongest untrained reference tries of a network with `count` stages: its own output, each stage
    pooled, and all of them concatenated (a network without stages, as the raw pixels: its output only)."""
    return [LAST, *(f"{STAGE}:{k}" for k in range(1, count + 1)), STAGES] if count else [LAST]


def feature_option(text: str) -> str:
    """--features' argparse type: the canonical spec, or argparse's one-line error."""
    try:
        return canonical(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


feature_option.__name__ = "features"


def feature_choice_option(text: str) -> str:
    """--features' argparse type where the choice on val is offered too: best, or a canonical spec."""
    return BEST if text.strip() == BEST else feature_option(text)


feature_choice_option.__name__ = "features"
FEATURES_HELP = (f"which features to read: {LAST} (the network's output), {STAGE}:K (stage K globally "
                 f"average-pooled; 1 = the first block), {STAGES} (every stage pooled, concatenated), {STAGES}:I-J")
BEST_HELP = f"; {BEST}: the candidate (last, each stage, all stages) whose probe scores best on the validation split"
