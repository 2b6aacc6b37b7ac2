"""The memory-mapped cache of a data set larger than memory (common/data/cache.py), and the loader that prefetches
batches from it (common/data/prefetch.py)."""
import json
import os
import threading

import numpy as np
import pytest
import torch

from common.data import cache, datamodule as data_module
from common.data.datamodule import MedMNISTDataModule, fits_on_device
from common.data.synthetic import write_synthetic
from pretrain.simclr import train as simclr_train
from utils import UserError


def epoch_batches(data: MedMNISTDataModule, split: str = "train", epoch: int = 1):
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    loader.sampler.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("flag, size", [("bloodmnist", 28), ("chestmnist", 28), ("adrenalmnist3d", 28)])
def test_mapped_batches_equal_the_in_memory_ones(tmp_path, flag, size):
    """RGB (channel-last in the npz), multi-label grey and volumes: the mapped images are the in-memory tensors,
    and every batch of an epoch, training and validation, is the same."""
    write_synthetic(tmp_path, flag, size, splits=(37, 11, 9), compress=True)
    memory = MedMNISTDataModule(flag, size, tmp_path, batch_size=8, eval_batch_size=4, storage="memory",
                                download=False).load()
    mapped = MedMNISTDataModule(flag, size, tmp_path, batch_size=8, eval_batch_size=4, storage="mmap",
                                download=False).load()
    assert not memory.mapped and set(mapped.mapped) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        torch.testing.assert_close(mapped.splits[split][0], memory.splits[split][0], rtol=0, atol=0)
        torch.testing.assert_close(mapped.splits[split][1], memory.splits[split][1], rtol=0, atol=0)
    for split in ("train", "val"):
        a, b = epoch_batches(memory, split), epoch_batches(mapped, split)
        assert mapped.train_dataloader().prefetch and len(a) == len(b) > 1
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.is_contiguous()


def test_the_cache_is_built_once_reused_and_rebuilt_when_the_npz_changes(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path, "breastmnist", 28, seed=0, splits=(20, 6, 6), compress=True)
    builds = []
    build = cache.build_cache
    monkeypatch.setattr(cache, "build_cache", lambda *a, **k: builds.append(1) or build(*a, **k))

    def load():
        return MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", download=False).load()

    first = load().splits["train"][0].clone()
    folder = cache.cache_folder(path)
    assert len(builds) == 1 and (folder / "manifest.json").is_file()
    assert np.load(folder / "train_images.npy", mmap_mode="r").shape == (20, 1, 28, 28)  # channel-first
    assert torch.equal(load().splits["train"][0], first) and len(builds) == 1  # reused
    write_synthetic(tmp_path, "breastmnist", 28, seed=1, splits=(20, 6, 6), compress=True)  # a new npz
    changed = load().splits["train"][0]
    assert len(builds) == 2 and not torch.equal(changed, first)
    fresh = MedMNISTDataModule("breastmnist", 28, tmp_path, storage="memory", download=False).load()
    assert torch.equal(changed, fresh.splits["train"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breastmnist.cache", "breastmnist.cache.lock", "breastmnist.npz"]


def test_an_interrupted_build_leaves_no_cache_and_a_bad_npz_is_a_one_line_error(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path, "breastmnist", 28, splits=(20, 6, 6))
    chunks = cache.read_chunks

    def fail_midway(archive, name):
        for i, chunk in enumerate(chunks(archive, name)):
            if name.startswith("val"):
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(cache, "read_chunks", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", download=False).load()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breastmnist.cache.lock", "breastmnist.npz"]
    monkeypatch.undo()
    path.write_bytes(path.read_bytes()[:300])  # truncated
    with pytest.raises(UserError, match="not a readable npz"):
        MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", download=False).load()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breastmnist.cache.lock", "breastmnist.npz"]


def test_processes_starting_together_build_the_cache_once(tmp_path, monkeypatch):
    """Two loaders at once (as the processes of a multi-device run): one builds, the other waits and maps it."""
    write_synthetic(tmp_path, "breastmnist", 28, splits=(20, 6, 6))
    builds, build, started = [], cache.build_cache, threading.Barrier(2)

    def slow_build(*args, **kwargs):
        builds.append(1)
        threading.Event().wait(0.3)
        return build(*args, **kwargs)

    monkeypatch.setattr(cache, "build_cache", slow_build)
    loaded = []

    def load():
        started.wait()
        loaded.append(MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", download=False).load())

    threads = [threading.Thread(target=load) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(builds) == 1 and len(loaded) == 2
    assert torch.equal(loaded[0].splits["train"][0], loaded[1].splits["train"][0])


def test_wrong_arrays_are_refused_before_anything_is_cached(tmp_path):
    np.savez(tmp_path / "bloodmnist.npz", **{f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": np.zeros((4, 1), np.uint8) for s in ("train", "val", "test")})
    with pytest.raises(UserError, match=r"train_images has shape \(4, 28, 28\)"):
        MedMNISTDataModule("bloodmnist", 28, tmp_path, storage="mmap", download=False).load()
    assert not cache.cache_folder(tmp_path / "bloodmnist.npz").exists()


def test_auto_storage_maps_only_large_sets(tmp_path, monkeypatch):
    path = write_synthetic(tmp_path, "breastmnist", 28, splits=(20, 6, 6), compress=True)
    nbytes = cache.images_nbytes(path)
    assert 32 * 28 * 28 < nbytes <= 32 * 28 * 28 + 3 * 128  # the images and their .npy headers, from the zip's directory
    assert MedMNISTDataModule("breastmnist", 28, tmp_path, download=False).resolved_storage() == "memory"
    monkeypatch.setattr(data_module, "IN_MEMORY_BYTES", nbytes - 1)
    data = MedMNISTDataModule("breastmnist", 28, tmp_path, download=False).load()
    assert data.resolved_storage() == "mmap" and data.mapped


def test_a_training_subset_of_a_mapped_set_is_taken_into_memory(tmp_path):
    write_synthetic(tmp_path, "breastmnist", 28, splits=(20, 6, 6))
    data = MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", samples=5, download=False).load()
    assert len(data.splits["train"][0]) == 5 and "train" not in data.mapped and "val" in data.mapped
    subset = MedMNISTDataModule("breastmnist", 28, tmp_path, storage="mmap", download=False).load().subset(None, 3, 0)
    assert len(subset.splits["train"][0]) == 6 and "train" not in subset.mapped


def test_prefetching_stops_its_thread_when_the_consumer_stops_and_passes_errors_on():
    from common.data.prefetch import ahead

    before = threading.active_count()
    items = ahead(((torch.full((2,), i),) for i in range(100)), None)
    assert [int(next(items)[0][0]) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert threading.active_count() == before

    def broken():
        yield (torch.zeros(1),)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(ahead(broken(), None))


def resident_mb(path) -> float:
    """Resident pages of this process's mappings of `path` (Linux: /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:  # the header line of a mapping
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps") or not hasattr(os, "preadv"), reason="Linux")
def test_batches_are_read_from_the_file_without_mapping_it_into_the_process(tmp_path):
    """An epoch of batches read from the cache (one positioned read per image) leaves the process's resident
    memory as it was; slicing the mapping instead brings the file's pages in. Both give the same images."""
    write_synthetic(tmp_path, "breastmnist", 64, splits=(3000, 4, 4))  # 12 MB of images
    data = MedMNISTDataModule("breastmnist", 64, tmp_path, batch_size=50, storage="mmap", download=False).load()
    mapped = data.mapped["train"]
    index = torch.randperm(3000)[:64]
    assert torch.equal(mapped.take(index, torch.empty(64, 1, 64, 64, dtype=torch.uint8)), mapped.tensor[index])
    mapped.release()
    epoch_batches(data)
    by_reads = resident_mb(mapped.path)
    mapped.tensor[torch.randperm(3000)].clone()
    by_mapping = resident_mb(mapped.path)
    assert by_reads < 0.5 and by_mapping > 8, (by_reads, by_mapping)
    mapped.release()
    assert resident_mb(mapped.path) < 0.5


def test_the_set_stays_on_the_gpu_only_with_room_for_the_model():
    assert fits_on_device(4 << 30, 10 << 30) and not fits_on_device(6 << 30, 10 << 30)


def test_pretraining_runs_from_the_mapped_cache(tmp_path, data_dir, output_root):
    run = simclr_train.main(["--dataset", "breastmnist", "--data-dir", str(data_dir), "--data-storage", "mmap",
                             "--backbone", "small_cnn", "--epochs", "1", "--batch-size", "16"])
    record = json.loads(run.with_suffix(".config.json").read_text())
    assert record["options"]["data_storage"] == "mmap" and (data_dir / "breastmnist.cache" / "manifest.json").is_file()
    assert os.path.getsize(data_dir / "breastmnist.cache" / "train_images.npy") > 48 * 28 * 28
