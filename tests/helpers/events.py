"""Reading what a run logged to TensorBoard, for the tests."""
from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _accumulators(folder):
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        yield accumulator


def scalar_tags(folder) -> set[str]:
    """Every scalar tag logged under `folder`."""
    return {tag for accumulator in _accumulators(folder) for tag in accumulator.Tags()["scalars"]}


def image_tags(folder) -> set[str]:
    """Every image tag logged under `folder`."""
    return {tag for accumulator in _accumulators(folder) for tag in accumulator.Tags()["images"]}


def scalar_values(folder, tag: str = "train/loss") -> list[float]:
    """The values of `tag` in step order, across every event file under `folder` (a resumed run has two)."""
    values = {}
    for accumulator in _accumulators(folder):
        if tag in accumulator.Tags()["scalars"]:
            values.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return [values[k] for k in sorted(values)]
