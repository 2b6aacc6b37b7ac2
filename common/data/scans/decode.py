"""One file of a user's folder -> a uint8 array at the cache's size: a 2D image (H, W) or (H, W, 3), or a volume
(D, H, W). No torch: this runs in the decoding worker processes.

The rules (README "Your own data"), in the order they apply:
- Intensities. 8-bit images are kept as they are. Anything else (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) is
  mapped to 0-255 by a window: `--window LOW,HIGH` if given (in the file's own units after DICOM's rescale slope
  and intercept: Hounsfield units for CT, e.g. -160,240 for soft tissue), else the image's own 0.5th-99.5th
  percentiles (PERCENTILES), per image (per volume), values outside clipped. DICOM MONOCHROME1 is inverted so that
  bright means dense, as in MONOCHROME2.
- Shape. Non-square images are made square by `--fit`: `pad` (the default: centred on a black square, nothing cut
  off), `crop` (the centred square, nothing distorted) or `stretch` (resized as they are). Volumes the same, to a
  cube. Then resized to the cache's size: 2D with Pillow's bicubic filter (antialiased when shrinking), volumes
  with cubic spline interpolation (scipy.ndimage.zoom, order 3); an image already at the size is not touched.
- Channels. Grey stays grey, RGB(A)/palette images become RGB (alpha dropped), grey+alpha grey; what a folder of
  mixed grey and colour files becomes is the cache's rule (common/data/scans/cache.py).
- NIfTI axes: the array nibabel returns, (x, y, z), is stored as (z, y, x): depth first, as MedMNIST's volumes.
- A DICOM series (a folder whose slices share one SeriesInstanceUID: common/data/scans/layout.py) is one volume: its
  slices ordered along the slice normal (ImagePositionPatient projected on the cross product of
  ImageOrientationPatient's row and column directions; InstanceNumber where those are missing), stacked depth first,
  then windowed and resized as a NIfTI volume. Voxel spacing is not resampled (as for NIfTI): the volume's voxel
  counts are made a cube by --fit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
VOLUME_SUFFIXES = (".nii", ".nii.gz")
FITS = ("pad", "crop", "stretch")
PERCENTILES = (0.5, 99.5)  # ours: the window of an image without --window; robust to a few hot or dead pixels


class DecodeError(Exception):
    """A file that cannot be read as what its suffix says."""


def suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_volume(path: Path) -> bool:
    """A NIfTI file, or a folder (a DICOM series: layout.py names a series by its folder)."""
    return suffix(path) in VOLUME_SUFFIXES or path.is_dir()


def is_scan(path: Path) -> bool:
    return suffix(path) in IMAGE_SUFFIXES + VOLUME_SUFFIXES


def decode(path: Path, size: int, fit: str = "pad", window: tuple[float, float] | None = None) -> np.ndarray:
    """The file at `path` as uint8 at `size` (per side); DecodeError when it cannot be read."""
    try:
        if path.is_dir():
            return resize_volume(to_uint8(read_dicom_series(path), window), size, fit)
        if is_volume(path):
            return resize_volume(to_uint8(read_nifti(path), window), size, fit)
        array, native_8bit = read_dicom(path) if suffix(path) == ".dcm" else read_image(path)
        image = array if native_8bit and window is None else to_uint8(array, window)
        return resize_image(image, size, fit)
    except DecodeError:
        raise
    except Exception as err:  # Pillow, pydicom and nibabel each raise their own kinds for a broken file
        raise DecodeError(f"{type(err).__name__}: {err}".splitlines()[0]) from None


def read_image(path: Path) -> tuple[np.ndarray, bool]:
    """(pixels, whether they are 8-bit already) of a PNG, JPEG, TIFF or BMP: (H, W) or (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGB", "L"):
            return np.asarray(image), True
        if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV", "PA"):
            return np.asarray(image.convert("RGB")), True
        if image.mode in ("LA", "1"):
            return np.asarray(image.convert("L")), True
        array = np.asarray(image)  # I;16, I;16B, I (32-bit), F: one channel of more than 8 bits
    if array.ndim != 2:
        raise DecodeError(f"unsupported image mode {image.mode} with shape {array.shape}")
    return array.astype(np.float32), False


def read_dicom(path: Path, ds=None) -> tuple[np.ndarray, bool]:
    """(pixels in the modality's units, False) of a single-frame DICOM file (`ds`: it, read already); colour DICOMs
    as (H, W, 3) uint8."""
    import pydicom

    ds = pydicom.dcmread(path) if ds is None else ds
    if "PixelData" not in ds:
        raise DecodeError("a DICOM file without pixel data")
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(f"a multi-frame DICOM ({frames} frames); give one file per 2D image")
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB where it can)
        return pixels.astype(np.uint8) if pixels.dtype == np.uint8 else to_uint8(pixels.astype(np.float32), None), True
    if pixels.ndim != 2:
        raise DecodeError(f"DICOM pixel data of shape {pixels.shape}; expected one 2D frame")
    values = pixels.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
        getattr(ds, "RescaleIntercept", 0) or 0)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        values = values.max() + values.min() - values  # bright = dense, as in MONOCHROME2
    return values, False


def series_uid(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM slice that has a position in the patient (ImagePositionPatient), read from
    its header alone; None for a file without them (a radiograph, a broken file)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # a broken file: decoding it reports the error
        return None
    uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    return uid if uid and "ImagePositionPatient" in ds else None


def slice_position(ds) -> float:
    """Where a slice lies along its series' normal (ImagePositionPatient . (row x column)), else its InstanceNumber."""
    orientation, position = getattr(ds, "ImageOrientationPatient", None), getattr(ds, "ImagePositionPatient", None)
    if orientation is not None and position is not None and len(orientation) == 6:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        return float(np.dot(normal, np.asarray(position, float)))
    return float(getattr(ds, "InstanceNumber", 0) or 0)


def series_slices(folder: Path) -> list[Path]:
    """The slice files of a DICOM series' folder, in name order: its .dcm files, hidden ones left out (as the
    folder's scan leaves them out)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and suffix(p) == ".dcm" and not p.name.startswith("."))


def read_dicom_series(folder: Path) -> np.ndarray:
    """The .dcm slices of `folder` as one float32 volume (z, y, x) in the modality's units."""
    import pydicom

    slices = []
    for path in series_slices(folder):
        ds = pydicom.dcmread(path)
        values, _ = read_dicom(path, ds)
        if values.ndim != 2:
            raise DecodeError(f"{path.name}: a colour slice in a DICOM series")
        slices.append((slice_position(ds), str(getattr(ds, "SeriesInstanceUID", "")), path.name, values))
    if len({uid for _, uid, _, _ in slices}) > 1:
        raise DecodeError(f"the folder mixes {len({uid for _, uid, _, _ in slices})} DICOM series; give each its own "
                          "folder")
    shapes = {values.shape for *_, values in slices}
    if len(shapes) > 1:
        raise DecodeError(f"slices of different shapes {sorted(shapes)} in one series")
    slices.sort(key=lambda item: (item[0], item[2]))
    return np.stack([values for *_, values in slices]).astype(np.float32)


def read_nifti(path: Path) -> np.ndarray:
    """A NIfTI volume as float32 (z, y, x); a 4D file must hold one volume."""
    import nibabel

    volume = np.asanyarray(nibabel.load(str(path)).dataobj, dtype=np.float32)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise DecodeError(f"a NIfTI image of shape {volume.shape}; expected one 3D volume")
    return np.ascontiguousarray(volume.transpose(2, 1, 0))


def to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """`values` mapped linearly from `window` (default: their PERCENTILES) to 0-255, clipped."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DecodeError("no finite pixel values")
    low, high = window if window is not None else np.percentile(finite, PERCENTILES)
    if high <= low:  # a constant image: all black
        return np.zeros(values.shape, np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def square(array: np.ndarray, fit: str, axes: int) -> np.ndarray:
    """The first `axes` axes of `array` made equal by `fit` (pad or crop, centred; stretch leaves them)."""
    sides = array.shape[:axes]
    if fit == "stretch" or len(set(sides)) == 1:
        return array
    target = max(sides) if fit == "pad" else min(sides)
    if fit == "pad":
        widths = [((target - s) // 2, target - s - (target - s) // 2) for s in sides] + [(0, 0)] * (array.ndim - axes)
        return np.pad(array, widths)
    starts = [(s - target) // 2 for s in sides]
    return array[tuple(slice(b, b + target) for b in starts)]


def resize_image(image: np.ndarray, size: int, fit: str) -> np.ndarray:
    from PIL import Image

    image = square(image, fit, 2)
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def resize_volume(volume: np.ndarray, size: int, fit: str) -> np.ndarray:
    from scipy import ndimage

    volume = square(volume, fit, 3)
    if volume.shape == (size, size, size):
        return volume
    zoomed = ndimage.zoom(volume.astype(np.float32), [size / s for s in volume.shape], order=3,
                          grid_mode=True, mode="grid-constant")
    return np.clip(np.rint(zoomed), 0, 255).astype(np.uint8)[:size, :size, :size]
