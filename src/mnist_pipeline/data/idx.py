"""The IDX format of the MNIST files: the one place in the project that parses their raw bytes.

Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per
dimension, then the values in C order, big-endian when wider than a byte. Reading checks every
part of that against the file's real length, so a damaged file fails here with its name rather
than as a strange array further on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_pipeline.atomic import atomic_write

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype: code for code, dtype in DTYPES.items()}


class IDXError(ValueError):
    """A file that is not the IDX data its reader expects; the message names the file and why."""


def read(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """The array stored in an IDX file, in native byte order."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(4)
        if len(magic) < 4:
            raise IDXError(f"{path}: too short for an IDX header: {size} bytes, the header needs at least 4")
        if magic[:2] != b"\0\0":
            raise IDXError(f"{path}: bad IDX magic {magic.hex()}: the first two bytes must be zero")
        if magic[2] not in DTYPES:
            raise IDXError(
                f"{path}: bad IDX magic {magic.hex()}: unknown dtype code 0x{magic[2]:02X} "
                f"(known: {', '.join(f'0x{c:02X}' for c in DTYPES)})"
            )
        dtype, ndim = DTYPES[magic[2]], magic[3]
        if expected_ndim is not None and ndim != expected_ndim:
            raise IDXError(f"{path}: wrong number of dimensions: the header says {ndim}, expected {expected_ndim}")
        header_size = 4 + 4 * ndim
        if size < header_size:
            raise IDXError(
                f"{path}: too short for its IDX header: {size} bytes, a {ndim}-dimensional header needs {header_size}"
            )
        shape = tuple(int(d) for d in np.frombuffer(f.read(4 * ndim), dtype=">u4"))
        count = int(np.prod(shape, dtype=np.int64))
        expected, actual = count * dtype.itemsize, size - header_size
        if actual != expected:
            problem = "truncated" if actual < expected else "trailing bytes"
            raise IDXError(
                f"{path}: {problem}: the header (shape {shape}, {dtype.name}) needs {expected} data bytes, "
                f"the file has {actual}"
            )
        data = np.fromfile(f, dtype=dtype, count=count)
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_images(path: str | os.PathLike) -> np.ndarray:
    return read(path, expected_ndim=3)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    return read(path, expected_ndim=1)


def write_to(f: BinaryIO, array: np.ndarray) -> None:
    """Write `array` as IDX into an open binary file (for writers that verify before renaming)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    code = _CODES.get(native)
    if code is None:
        known = ", ".join(sorted({d.newbyteorder("=").name for d in DTYPES.values()}))
        raise IDXError(f"IDX cannot store dtype {array.dtype}: convert the array to one of {known}")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise IDXError(f"IDX cannot store shape {array.shape}: at most 255 dimensions, each below 2**32")
    f.write(bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes())
    data = np.ascontiguousarray(array, dtype=DTYPES[code])
    f.write(data.reshape(-1).view(np.uint8).data)


def write(path: str | os.PathLike, array: np.ndarray) -> None:
    """Store `array` as an IDX file, atomically."""
    with atomic_write(path) as f:
        write_to(f, array)
