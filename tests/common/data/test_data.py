import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch

from common.data import registry as flags
from common.data.datamodule import MedMNISTDataModule, select_subset
from common.data.registry import dataset_info
from helpers.fakedata import SPLIT_SIZES, write_npz
from utils import UserError


def test_channels_classes_and_task_come_from_metadata(data_dir):
    for flag, channels, classes, multilabel in [("breastmnist", 1, 2, False), ("bloodmnist", 3, 8, False),
                                                ("chestmnist", 1, 14, True)]:
        data = MedMNISTDataModule(flag, data_dir=data_dir).load()
        images, labels = data.splits["train"]
        assert (data.num_channels, data.num_classes, data.multilabel) == (channels, classes, multilabel)
        assert images.dtype == torch.uint8 and images.shape == (SPLIT_SIZES[flag][0], channels, 28, 28)
        assert labels.shape == ((len(images), classes) if multilabel else (len(images),))


def test_grey_images_stay_one_channel_and_match_the_file(data_dir):
    data = MedMNISTDataModule("breastmnist", data_dir=data_dir).load()
    with np.load(data_dir / "breastmnist.npz") as npz:
        assert torch.equal(data.splits["val"][0][:, 0], torch.from_numpy(npz["val_images"]))
        assert torch.equal(data.splits["test"][1], torch.from_numpy(npz["test_labels"][:, 0]).long())


def test_rgb_images_are_channels_first(data_dir):
    data = MedMNISTDataModule("bloodmnist", data_dir=data_dir).load()
    with np.load(data_dir / "bloodmnist.npz") as npz:
        assert torch.equal(data.splits["train"][0].permute(0, 2, 3, 1), torch.from_numpy(npz["train_images"]))


def test_loader_batches_cover_the_split_once_and_shuffle_per_epoch(data_dir):
    data = MedMNISTDataModule("bloodmnist", data_dir=data_dir, batch_size=10).load()
    loader = data.train_dataloader()
    first = torch.cat([y for _, y in loader])
    assert len(loader) == 7 and sorted(first.tolist()) == sorted(data.splits["train"][1].tolist())
    loader.sampler.set_epoch(1)
    second = torch.cat([x.flatten(1)[:, 0] for x, _ in loader])
    loader.sampler.set_epoch(0)
    again = torch.cat([x.flatten(1)[:, 0] for x, _ in loader])
    assert not torch.equal(second, again)
    assert torch.equal(again, torch.cat([x.flatten(1)[:, 0] for x, _ in loader]))  # same epoch, same order


def test_samples_per_class_gives_exact_counts(data_dir):
    data = MedMNISTDataModule("bloodmnist", data_dir=data_dir, samples_per_class=3, seed=1).load()
    labels = data.splits["train"][1]
    assert torch.bincount(labels, minlength=8).tolist() == [3] * 8


def test_samples_gives_n_random_images_seeded(data_dir):
    a = MedMNISTDataModule("bloodmnist", data_dir=data_dir, samples=20, seed=1).load()
    b = MedMNISTDataModule("bloodmnist", data_dir=data_dir, samples=20, seed=1).load()
    c = MedMNISTDataModule("bloodmnist", data_dir=data_dir, samples=20, seed=2).load()
    assert len(a.splits["train"][0]) == 20
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])
    assert len(a.splits["val"][0]) == SPLIT_SIZES["bloodmnist"][1]  # only train is subsampled


def test_subset_of_a_loaded_set_is_the_draw_load_makes_without_reading_the_file_again(data_dir):
    full = MedMNISTDataModule("breastmnist", data_dir=data_dir).load()
    for samples, per_class, seed in ((None, 3, 1), (7, None, 2), (None, None, 0)):
        drawn = MedMNISTDataModule("breastmnist", data_dir=data_dir, samples=samples, samples_per_class=per_class,
                                   seed=seed).load()
        subset = full.subset(samples, per_class, seed)
        assert all(torch.equal(a, b) for a, b in zip(subset.splits["train"], drawn.splits["train"]))
        assert subset.splits["test"][0] is full.splits["test"][0]  # shared, not read again
        assert (subset.samples, subset.samples_per_class, subset.seed) == (samples, per_class, seed)


def test_subset_errors_name_the_problem():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    with pytest.raises(UserError, match="class 2 has only 1"):
        select_subset(labels, None, 2, seed=0)
    with pytest.raises(UserError, match="between 1 and"):
        select_subset(labels, None, 0, seed=0)
    with pytest.raises(UserError, match="--samples 7"):
        select_subset(labels, 7, None, seed=0)


def test_unknown_flag_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean bloodmnist"):
        dataset_info("bloodmnst")


def test_bad_files_give_user_errors(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="not a readable npz"):
        MedMNISTDataModule("breastmnist", data_dir=tmp_path, download=False).load()
    np.savez(tmp_path / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="no train_images"):
        MedMNISTDataModule("breastmnist", data_dir=tmp_path, download=False).load()
    arrays = {f"{s}_{k}": np.zeros((2, 28, 28, 3) if k == "images" else (2, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(UserError, match="shape"):
        MedMNISTDataModule("breastmnist", data_dir=tmp_path, download=False).load()


def _serve(folder):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_missing_file_is_downloaded_through_medmnist(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    source = write_npz(served, "retinamnist")
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    server = _serve(served)
    try:
        info = dict(flags.INFO["retinamnist"], url=f"http://127.0.0.1:{server.server_port}/retinamnist.npz", MD5=md5)
        monkeypatch.setitem(flags.INFO, "retinamnist", info)  # the table the data module reads (medmnist's own)
        data = MedMNISTDataModule("retinamnist", data_dir=tmp_path / "data").load()
        assert (tmp_path / "data" / "retinamnist.npz").read_bytes() == source.read_bytes()
        assert data.num_train() == SPLIT_SIZES["retinamnist"][0]
        info["url"] = f"http://127.0.0.1:{server.server_port}/missing.npz"
        with pytest.raises(UserError, match=r"could not be downloaded \(download http://127.0.0.1.*put it at"):
            MedMNISTDataModule("retinamnist", data_dir=tmp_path / "empty").load()
    finally:
        server.shutdown()
