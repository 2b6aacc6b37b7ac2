"""Your own scans: a folder of images or volumes (or an npz anywhere) as --dataset, through every stage; the cache
read again unchanged; the same images as an npz and as PNGs; pooled pretraining; encoders across grey and colour;
and every bad input a one-line error that writes nothing."""
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import scans
from common.data import sources
from common.data.datamodule import MedMNISTDataModule
from common.data.scans.decode import decode
from downstream.logistic_regression import test as lr_test
from downstream.logistic_regression import train as lr_train
from downstream.resnet import test as resnet_test
from downstream.resnet import train as resnet_train
from helpers.events import scalar_values
from helpers.fakedata import write_npz
from pretrain import test as pretrain_test
from pretrain.simclr import train as simclr_train
from experiments import label_efficiency
from utils import run_cli

def data_of(text: str, **options) -> MedMNISTDataModule:
    """The data module of --dataset `text` (28 px) with a folder's `options` (labels=...)."""
    sources.resolve(text, 28, **options)
    return MedMNISTDataModule(text, 28).load()


FOLDERS = {  # kind -> (writer, extra options, backbone)
    "png class folders": (lambda root: scans.png_class_folders(root), [], "small_cnn"),
    "labels csv": (lambda root: scans.csv_folder(root)[0], ["--labels-from", "{root}/labels.csv"], "small_cnn"),
    "16-bit tiff": (lambda root: scans.tiff16_folder(root), [], "small_cnn"),
    "dicom": (lambda root: scans.dicom_folder(root), ["--window=-1024,3000"], "small_cnn"),
    "nifti volumes": (lambda root: scans.nifti_folder(root), [], "small_cnn_3d"),
    "dicom series": (lambda root: scans.dicom_series_folder(root), ["--window=-1024,3000"], "small_cnn_3d"),
}


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_a_folder_runs_every_stage_and_its_cache_is_read_again(kind, tmp_path, output_root, capsys):
    writer, options, backbone = FOLDERS[kind]
    root = writer(tmp_path / "scans")
    extra = [o.format(root=root) for o in options]
    data = ["--dataset", str(root), *extra]
    simclr_train.main([*data, "--epochs", "2", "--backbone", backbone, "--batch-size", "8"])
    out = capsys.readouterr().out
    assert out.count("cached ") == 1 and "pretrain-scans.ckpt" in out
    cache = next(p for p in (output_root / "data_cache").glob("scans-*/*px-*") if p.is_dir())
    stamp = (cache / "train_images.npy").stat().st_mtime_ns
    config = json.loads((output_root / "pretrain/simclr/models/pretrain-scans.config.json").read_text())
    assert config["data"]["kind"] == "folder" and config["data"]["digest"] and config["data_md5"]

    probe = lr_train.main([*data, "--solver", "lbfgs", "--name", "probe"])
    lr_test.main(["--checkpoint", str(probe), "--no-references"])
    finetuned = resnet_train.main([*data, "--epochs", "1", "--batch-size", "8", "--name", "finetuned"])
    resnet_test.main(["--checkpoint", str(finetuned)])
    pretrain_test.main(["--checkpoint", "pretrain-scans", "--probe-epochs", "2"])
    label_efficiency.main([*data, "--protocols", "probe", "finetune", "--labels", "3", "--seeds", "0",
                           "--references", "pixels", "--finetune-epochs", "1"])
    out = capsys.readouterr().out
    assert "cached " not in out  # every later command read the cache: nothing decoded again
    assert (cache / "train_images.npy").stat().st_mtime_ns == stamp
    for report in ("downstream/logistic_regression/models/probe.test.json", "downstream/resnet/models/finetuned.test.json",
                   "pretrain/simclr/models/pretrain-scans.test.json"):
        assert json.loads((output_root / report).read_text())["auroc"] >= 0
    rows = (output_root / "outputs/label_efficiency/scans/results.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header; the pretrained encoder and the pixels probed, the encoder finetuned


def test_a_changed_folder_is_cached_again_and_an_unchanged_one_is_not(tmp_path, output_root, capsys):
    root = scans.png_class_folders(tmp_path / "scans", n=12)
    first = sources.resolve(str(root), 28)
    assert "cached 12 images" in capsys.readouterr().out
    assert sources.resolve(str(root), 28).digest == first.digest and "cached" not in capsys.readouterr().out
    shutil.copy(root / "benign/000.png", root / "benign/100.png")
    again = sources.resolve(str(root), 28)
    assert "cached 13 images" in capsys.readouterr().out and again.digest != first.digest


def test_the_same_images_as_npz_and_as_png_folder_give_the_same_arrays_and_first_loss(tmp_path, output_root):
    (tmp_path / "npz").mkdir()
    npz = write_npz(tmp_path / "npz", "breastmnist")
    folder, labels = scans.npz_as_png_folder(npz, tmp_path / "pngs")
    from_npz, from_folder = data_of(str(npz)), data_of(str(folder), labels=str(labels))
    for split in ("train", "val", "test"):
        assert torch.equal(from_npz.splits[split][0], from_folder.splits[split][0])
        assert torch.equal(from_npz.splits[split][1], from_folder.splits[split][1])
    losses = []
    for name, data in (("npz", ["--dataset", str(npz)]), ("pngs", ["--dataset", str(folder), "--labels", str(labels)])):
        simclr_train.main([*data, "--epochs", "1", "--batch-size", "16", "--seed", "3", "--name", name])
        losses.append(scalar_values(output_root / "pretrain/simclr/models/tb_logs" / name))
    assert losses[0] and losses[0] == losses[1]


def test_decoding_rules(tmp_path):
    """16-bit: each image's 0.5-99.5th percentiles to 0-255; pad keeps the whole image centred; MONOCHROME1 inverted;
    an 8-bit image at the size is untouched; NIfTI stored depth first and resized to a cube."""
    ramp = np.tile(np.linspace(0, 4000, 40), (20, 1)).astype(np.uint16)
    from PIL import Image

    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    padded = decode(tmp_path / "ramp.tif", 40, "pad")
    assert padded.dtype == np.uint8 and padded.shape == (40, 40)
    assert (padded[:10] == 0).all() and padded[20, 0] == 0 and padded[20, -1] == 255  # black bands; the ramp's ends
    assert decode(tmp_path / "ramp.tif", 20, "crop").shape == (20, 20)
    scans.write_dicom(tmp_path / "a.dcm", ramp[:, :20])
    scans.write_dicom(tmp_path / "b.dcm", ramp[:, :20], monochrome1=True)
    a, b = decode(tmp_path / "a.dcm", 20), decode(tmp_path / "b.dcm", 20)
    assert a[0, 0] < a[0, -1] and b[0, 0] > b[0, -1]
    window = decode(tmp_path / "a.dcm", 20, window=(-1024, 0))  # in HU, after the intercept: raw 0 to 1024
    assert window[0, -1] == 255 and window[0, 0] == 0
    grey = (np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(decode(tmp_path / "g.png", 28), grey)
    import nibabel

    volume = np.zeros((10, 12, 14), np.float32)
    volume[8:] = 1000  # x = 8, 9: the end of the stored (z, y, x) array's last axis, padded by 2 on each side (y by 1)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(tmp_path / "v.nii.gz"))
    cube = decode(tmp_path / "v.nii.gz", 14, "pad")
    assert cube.shape == (14, 14, 14) and (cube[:, 1:13, 10:12] == 255).all() and (cube[..., :10] == 0).all()


def test_a_dicom_series_is_one_volume_its_slices_in_patient_order(tmp_path, output_root):
    from common.data.scans.decode import read_dicom_series
    from common.data.scans.layout import read_layout
    from pydicom.uid import generate_uid

    root = tmp_path / "ct"
    uid = generate_uid()
    for rank, k in enumerate((2, 0, 3, 1)):  # file names in another order than the slices' positions
        (root / "p1").mkdir(parents=True, exist_ok=True)
        scans.write_dicom(root / "p1" / f"{rank}.dcm", np.full((8, 8), 1000 * k + 1024), series=uid, z=-5.0 * k)
    volume = read_dicom_series(root / "p1")  # HU after the intercept; z decreasing with k: the last slice first
    assert volume.shape == (4, 8, 8) and [v[0, 0] for v in volume] == [3000, 2000, 1000, 0]
    scans.write_dicom(root / "x1.dcm", np.zeros((8, 8)))  # radiographs beside it: 2D images
    scans.write_dicom(root / "x2.dcm", np.zeros((8, 8)))
    scans.write_dicom(root / "x3.dcm", np.zeros((8, 8)))
    with pytest.raises(Exception, match="mixes 3 2D images and 1 3D volumes"):
        read_layout(root, "none")
    for name in ("x1", "x2", "x3"):
        (root / f"{name}.dcm").unlink()
    scans.write_dicom(root / "p1" / "9.dcm", np.zeros((8, 8)), series=generate_uid(), z=9.0)  # another series
    with pytest.raises(Exception, match="mixes 2 DICOM series"):
        read_dicom_series(root / "p1")


def test_class_folders_splits_and_csv_multilabel(tmp_path, output_root):
    root = tmp_path / "split"
    for split, n in (("train", 20), ("test", 6)):
        scans.png_class_folders(root / split, n=n, seed=len(split))
    (root / "train/README.txt").unlink()
    (root / "test/README.txt").unlink()
    source = sources.resolve(str(root), 28)
    assert source.info["n_samples"] == {"train": 18, "val": 2, "test": 6}  # val drawn from train, 10% per class
    assert "val drawn from train" in source.info["split_rule"] and source.info["task"] == "binary-class"
    flat, _ = scans.csv_folder(tmp_path / "multi", colour=False)
    rows = ["path,tumour,calcification"] + [f"images/{i:03d}.png,{i % 2},{(i // 2) % 2}" for i in range(24)]
    (tmp_path / "multi.csv").write_text("\n".join(rows) + "\n")
    multi = data_of(str(flat), labels=str(tmp_path / "multi.csv"))
    assert multi.multilabel and multi.class_names == ["tumour", "calcification"] and multi.num_channels == 1
    assert sum(multi.info["n_samples"].values()) == 24


def test_unlabelled_folder_pretrains_and_the_probe_asks_for_labels(tmp_path, output_root, data_dir, capsys):
    root = tmp_path / "unlabelled"
    for i, (_, image) in enumerate(scans.class_images(20, (28, 28), 0)):
        root.mkdir(exist_ok=True)
        from PIL import Image

        Image.fromarray(image.astype(np.uint8)).save(root / f"{i}.png")
    simclr_train.main(["--dataset", str(root), "--epochs", "1", "--batch-size", "8", "--select-by", "knn"])
    assert "no kNN monitor" in capsys.readouterr().out  # so not selected by it
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lr_train.main, ["--dataset", str(root), "--encoder", "pretrain-unlabelled"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "needs labels" in err[0]
    # a labelled set serves the kNN monitor (and so checkpoint selection) of pretraining on the unlabelled folder
    simclr_train.main(["--dataset", str(root), "--monitor-dataset", "retinamnist", "--data-dir", str(data_dir),
                       "--epochs", "2", "--batch-size", "8", "--select-by", "knn", "--name", "monitored"])
    printed = capsys.readouterr().out
    assert "no kNN monitor" not in printed and "converted to 1 (luminance)" in printed
    folder = output_root / "pretrain/simclr/models"
    config = json.loads((folder / "monitored.config.json").read_text())
    assert config["monitor_dataset"]["name"] == "retinamnist" and config["monitor_dataset"]["md5"]
    aurocs = scalar_values(folder / "tb_logs" / "monitored", "val/knn_auroc")
    assert aurocs and all(0 <= a <= 1 for a in aurocs)
    assert list((folder / "tb_logs" / "monitored").rglob("*val_knn_auroc=*.ckpt"))  # selected by the monitor
    for monitor, message in ((str(root), "needs labels"), ("organmnist3d", "holds volumes")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(simclr_train.main, ["--dataset", str(root), "--monitor-dataset", monitor, "--data-dir",
                                        str(data_dir), "--epochs", "1", "--name", "refused"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not list(folder.glob("refused*"))


def test_pooled_pretraining_and_encoders_across_grey_and_colour(tmp_path, output_root, data_dir, capsys):
    data = ["--data-dir", str(data_dir)]
    simclr_train.main(["--dataset", "breastmnist", *data, "--extra-unlabelled", "retinamnist", "--epochs", "1",
                       "--batch-size", "16", "--name", "pooled"])
    assert "converted to 1 (luminance)" in capsys.readouterr().out
    config = json.loads((output_root / "pretrain/simclr/models/pooled.config.json").read_text())
    assert [s["name"] for s in config["extra_unlabelled"]] == ["retinamnist"] and config["extra_unlabelled"][0]["md5"]
    assert config["data"]["name"] == "breastmnist"
    breast_train = MedMNISTDataModule("breastmnist", 28, data_dir).load().num_train()
    retina_train = MedMNISTDataModule("retinamnist", 28, data_dir).load().num_train()
    ckpt = torch.load(output_root / "pretrain/simclr/models/pooled.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["num_train"] == breast_train + retina_train
    lr_train.main(["--dataset", "breastmnist", *data, "--encoder", "pooled", "--solver", "lbfgs", "--name", "p1"])
    simclr_train.main(["--dataset", "retinamnist", *data, "--epochs", "1", "--batch-size", "16", "--name", "colour"])
    capsys.readouterr()
    lr_train.main(["--dataset", "breastmnist", *data, "--encoder", "colour", "--solver", "lbfgs", "--name", "p2"])
    assert "pretrained on colour images and reads these grey images" in capsys.readouterr().out
    lr_train.main(["--dataset", "retinamnist", *data, "--encoder", "pooled", "--solver", "lbfgs", "--name", "p3"])
    assert "pretrained on grey images and reads these colour images as their luminance" in capsys.readouterr().out
    resnet_train.main(["--dataset", "retinamnist", *data, "--init", "pooled", "--epochs", "1", "--name", "f3"])
    resnet_test.main(["--checkpoint", "f3", *data])


def bad_png(root):
    scans.png_class_folders(root, n=8)
    (root / "benign/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def bad_dicom(root):
    scans.dicom_folder(root, n=8)
    (root / "benign/broken.dcm").write_bytes(b"DICM" * 10)


def mixed_dims(root):
    scans.png_class_folders(root / "a", n=4)
    scans.nifti_folder(root / "b", n=4)


def csv_case(rows: list[str], encoding: str = "utf-8"):
    def make(root):
        scans.csv_folder(root, n=8)
        (root / "labels.csv").write_bytes("\n".join(rows).encode(encoding))
    return make


GOOD_ROWS = ["path,label"] + [f"images/{i:03d}.png,{'ab'[i % 2]}" for i in range(8)]
BAD_FOLDERS = {  # case -> (make the folder, options, expected words in the error)
    "empty folder": (lambda root: root.mkdir(), [], "no files"),
    "no readable image": (lambda root: (root.mkdir(), (root / "notes.txt").write_text("x")), [], "none of them"),
    "corrupt png": (bad_png, [], "cannot be read (e.g. benign/broken.png"),
    "corrupt dicom": (bad_dicom, [], "cannot be read (e.g. benign/broken.dcm"),
    "2D and 3D mixed": (mixed_dims, [], "mixes 4 2D images and 4 3D volumes"),
    "csv names missing files": (csv_case(GOOD_ROWS + ["images/nope.png,a"]), ["--labels", "{root}/labels.csv"],
                                "names 1 files that are not images"),
    "files in no row": (csv_case(GOOD_ROWS[:-1]), ["--labels", "{root}/labels.csv"], "in no row of labels.csv"),
    "one class": (csv_case(["path,label"] + [f"images/{i:03d}.png,a" for i in range(8)]),
                  ["--labels", "{root}/labels.csv"], "holds one class"),
    "unknown split": (csv_case(["path,label,split"] + [f"images/{i:03d}.png,{i % 2},{'train' if i else 'holdout'}"
                                                        for i in range(8)]), ["--labels", "{root}/labels.csv"],
                      "unknown split 'holdout'"),
    "csv not utf-8": (csv_case(["path,label"] + [f"images/{i:03d}.png,{'éa'[i % 2]}" for i in range(8)], "latin-1"),
                      ["--labels", "{root}/labels.csv"], "is not UTF-8"),
    "neither flag, folder nor npz": (lambda root: (root.parent.mkdir(exist_ok=True), root.write_text("x")), [],
                                     "neither a MedMNIST flag, a folder nor an .npz file"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folder_gives_one_line_error_and_writes_nothing(case, tmp_path, output_root, capsys):
    make, options, expected = BAD_FOLDERS[case]
    root = tmp_path / "data" / "scans"
    root.parent.mkdir()
    make(root)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(simclr_train.main, ["--dataset", str(root), *[o.format(root=root) for o in options], "--epochs", "1"])
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "file/s]" not in line]  # progress
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # the output root not even made


def test_images_of_several_sizes_are_resized_not_refused(tmp_path, output_root):
    root = scans.png_class_folders(tmp_path / "a", n=6, shape=(30, 36))
    scans.png_class_folders(tmp_path / "a", n=6, shape=(64, 50), seed=5)
    (tmp_path / "a/benign/big.png").write_bytes((tmp_path / "a/benign/000.png").read_bytes())
    assert data_of(str(root)).splits["train"][0].shape[1:] == (1, 28, 28)


def test_a_folder_that_changes_while_it_is_cached_is_an_error(tmp_path, output_root, monkeypatch):
    from common.data.scans import cache

    root = scans.png_class_folders(tmp_path / "a", n=8)
    real = cache.decode_all

    def decode_then_add(*args):
        out = real(*args)
        shutil.copy(root / "benign/000.png", root / "benign/new.png")
        return out

    monkeypatch.setattr(cache, "decode_all", decode_then_add)
    with pytest.raises(Exception, match="changed while it was being cached"):
        sources.resolve(str(root), 28)
    assert not (output_root / "data_cache").exists()


def test_labels_outside_the_classes_are_refused_when_the_split_is_loaded(tmp_path, output_root, data_dir, capsys):
    """A binary set (breastmnist) whose train labels hold a 7: one line naming the split, row and value."""
    with np.load(data_dir / "breastmnist.npz") as arrays:
        arrays = dict(arrays)
    arrays["train_labels"] = arrays["train_labels"].copy()
    arrays["train_labels"][5] = 7
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad/breastmnist.npz", **arrays)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lr_train.main, ["--dataset", "breastmnist", "--data-dir", str(tmp_path / "bad"), "--encoder", "random"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert "train_labels[5] is [7], not a class 0-1 (1 such rows)" in lines[0]
