"""Batches prepared one ahead: gathered on a background thread, copied to the GPU without blocking.

For data that are not in device memory (a memory-mapped cache, or a set too large for the GPU): while the model
works on batch k, a thread gathers batch k + 1 from host memory or the cache's file (into pinned memory when it
goes to a GPU: only pinned memory copies asynchronously), and the copy of batch k + 1 to the device is queued
before batch k is handed out. torch's indexing and file reads run without Python's GIL, so the thread overlaps
the training step on the CPU as well.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

import torch

DEPTH = 2  # host batches gathered ahead of the one being copied


def gather(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, pin: bool, take=None) -> tuple[torch.Tensor, ...]:
    """images[index], labels[index] in new host tensors (pinned with `pin`); `take(index, out)` fills the images
    instead of indexing `images` (a memory-mapped cache reads them from its file)."""
    out = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=pin)
    take(index, out) if take is not None else torch.index_select(images, 0, index, out=out)
    return out, labels[index].pin_memory() if pin else labels[index]


def ahead(make: Iterable, device: torch.device | None) -> Iterator:
    """The items of `make` (tuples of host tensors), produced on a background thread, each moved to `device`
    (non-blocking; None: left on the host) one item before it is yielded."""
    items: queue.Queue = queue.Queue(maxsize=DEPTH)
    stop, done = threading.Event(), object()

    def produce():
        try:
            for item in make:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            items.put(err)

    def to_device(item):
        if device is None or device.type == "cpu":
            return item
        return tuple(t.to(device, non_blocking=True) for t in item)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    pending = None
    try:
        while True:
            item = items.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            item = to_device(item)
            if pending is not None:
                yield pending
            pending = item
        if pending is not None:
            yield pending
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
