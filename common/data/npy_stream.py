"""Read and write the arrays of an npz file piece by piece, never the whole array in memory.

An npz is a zip of .npy files; each .npy is a short header (shape, dtype, order) and the raw bytes. np.load
decompresses a whole member at once (16 GB for pathmnist at 224 px); these read or write it in chunks.
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO, Iterator

import numpy as np

CHUNK_BYTES = 64 << 20  # bytes per piece


def read_header(stream: BinaryIO) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of the .npy whose bytes `stream` is at the start of."""
    major, _ = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    return tuple(shape), np.dtype(dtype), fortran


def member_shape(npz: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with npz.open(name) as stream:
        return read_header(stream)


def read_chunks(npz: zipfile.ZipFile, name: str) -> Iterator[np.ndarray]:
    """Consecutive pieces (k, ...) of the C-ordered array in member `name`, about CHUNK_BYTES each."""
    with npz.open(name) as stream:
        shape, dtype, fortran = read_header(stream)
        if fortran:
            raise ValueError(f"{name} is stored in Fortran order")
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        rows = max(1, CHUNK_BYTES // max(row, 1))
        for start in range(0, shape[0], rows):
            k = min(rows, shape[0] - start)
            data = stream.read(k * row)
            if len(data) != k * row:
                raise ValueError(f"{name} ends after {start} of {shape[0]} rows")
            yield np.frombuffer(data, dtype=dtype).reshape(k, *shape[1:])


def write_npy(stream: BinaryIO, name: str, shape: tuple[int, ...], dtype, chunks: Iterator[np.ndarray]) -> None:
    """Write `chunks` (consecutive rows, together `shape`) as a C-ordered .npy to the writable `stream`."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(stream, header)
    written = 0
    for chunk in chunks:
        stream.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
        written += len(chunk)
    if written != shape[0]:
        raise ValueError(f"{name}: wrote {written} rows of {shape[0]}")


def write_member(npz: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype, chunks: Iterator[np.ndarray]) -> None:
    """write_npy as the member `name` of an open, writable zip."""
    with npz.open(name, "w", force_zip64=True) as stream:
        write_npy(stream, name, shape, dtype, chunks)
