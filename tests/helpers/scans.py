"""Folders of scans, as a user would have them, for the tests: PNGs in class folders, a flat folder with a labels
CSV, 16-bit TIFFs, DICOM files (pydicom) and NIfTI volumes (nibabel). Two classes each, told apart by brightness."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("benign", "malignant")


def class_images(n: int, shape: tuple, seed: int, high: float = 255.0) -> list[tuple[str, np.ndarray]]:
    """n (class, float image in [0, high]) pairs, classes alternating; class 1 brighter."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        image = (0.2 + 0.4 * label + 0.3 * rng.random(shape)) * high
        out.append((CLASSES[label], image))
    return out


def png_class_folders(root: Path, n: int = 24, shape=(30, 36), seed: int = 0) -> Path:
    """root/<class>/<i>.png, 8-bit grey, not square (padded by --fit pad); and a notes file that is not an image."""
    for i, (label, image) in enumerate(class_images(n, shape, seed)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(root / label / f"{i:03d}.png")
    (root / "README.txt").write_text("scans exported from the PACS\n")
    return root


def csv_folder(root: Path, n: int = 24, seed: int = 1, colour: bool = True) -> tuple[Path, Path]:
    """root/images/<i>.jpg... flat PNGs (RGB) and labels.csv with path,label,split (a train/val/test column)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (label, image) in enumerate(class_images(n, (28, 28, 3) if colour else (28, 28), seed)):
        name = f"images/{i:03d}.png"
        Image.fromarray(image.astype(np.uint8)).save(root / name)
        rows.append((name, label, ("train", "train", "train", "val", "test", "train")[(i // 2) % 6]))  # both classes
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "split"))
        writer.writerows(rows)
    return root, labels


def tiff16_folder(root: Path, n: int = 24, seed: int = 2) -> Path:
    """root/<class>/<i>.tif, 16-bit grey (0-4095, as a 12-bit detector writes), 40x40."""
    for i, (label, image) in enumerate(class_images(n, (40, 40), seed, high=4095)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint16)).save(root / label / f"{i:03d}.tif")
    return root


def write_dicom(path: Path, pixels: np.ndarray, monochrome1: bool = False, series: str | None = None,
                z: float | None = None, instance: int | None = None) -> None:
    """A minimal single-frame CT-like DICOM file: uint16 pixels, rescale slope 1, intercept -1024; a slice of a
    series (`series` its SeriesInstanceUID, `z` its position along an axial normal) when given."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "anonymous"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if series is not None:
        ds.SeriesInstanceUID, ds.InstanceNumber = series, instance or 1
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, z]
    ds.save_as(path, enforce_file_format=True)


def dicom_series_folder(root: Path, n: int = 24, seed: int = 5, slices: int = 12) -> Path:
    """root/<class>/patient<i>/<slice>.dcm: one CT-like series per volume, 20x20 slices written in shuffled order
    (their file names say nothing of their position)."""
    from pydicom.uid import generate_uid

    generator = np.random.default_rng(seed)
    for i, (label, volume) in enumerate(class_images(n, (slices, 20, 20), seed, high=4000)):
        folder = root / label / f"patient{i:03d}"
        folder.mkdir(parents=True)
        uid = generate_uid()
        for rank, k in enumerate(generator.permutation(slices)):
            write_dicom(folder / f"{rank:03d}.dcm", volume[k], series=uid, z=2.5 * k, instance=slices - k)
    return root


def dicom_folder(root: Path, n: int = 24, seed: int = 3) -> Path:
    """root/<class>/<i>.dcm, 32x32."""
    for i, (label, image) in enumerate(class_images(n, (32, 32), seed, high=4000)):
        (root / label).mkdir(parents=True, exist_ok=True)
        write_dicom(root / label / f"{i:03d}.dcm", image)
    return root


def nifti_folder(root: Path, n: int = 24, seed: int = 4, shape=(20, 24, 22)) -> Path:
    """root/<class>/<i>.nii.gz, float32 MRI-like volumes, not cubic."""
    import nibabel

    for i, (label, volume) in enumerate(class_images(n, shape, seed, high=1000.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(volume.astype(np.float32), np.eye(4)), str(root / label / f"{i:03d}.nii.gz"))
    return root


def npz_as_png_folder(npz: Path, root: Path) -> tuple[Path, Path]:
    """The images of a MedMNIST npz as PNGs, with a labels CSV holding each one's label and split, in the npz's order."""
    rows = []
    with np.load(npz) as arrays:
        for split in ("train", "val", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            (root / split).mkdir(parents=True, exist_ok=True)
            for i, (image, label) in enumerate(zip(images, labels)):
                name = f"{split}/{i:04d}.png"
                Image.fromarray(image).save(root / name)
                rows.append((name, int(label[0]), split))
    labels = root.parent / f"{root.name}-labels.csv"
    with open(labels, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "split"), *rows])
    return root, labels
