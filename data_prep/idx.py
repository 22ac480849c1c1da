"""Reader for the IDX format of (Fashion-)MNIST, checked strictly.

A wrong magic number or a truncated file is reported with the file name rather than read as
garbage, since a half-downloaded file would otherwise silently yield fewer or corrupt images.
"""
import gzip
import os
import zlib

import numpy as np

from data_prep.errors import DataPrepError

_UBYTE = 0x08


def read_idx(path, expected_ndim):
    """Returns the uint8 array stored in an IDX file (gzipped if the name ends in .gz)."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataPrepError(
            f"{path} is truncated or not a valid gzip file ({e}); "
            "reinstall the dataset (apt-get install --reinstall dataset-fashion-mnist)") from None
    return parse_idx(data, expected_ndim, name=path)


def parse_idx(data, expected_ndim, name="IDX data"):
    """Parses IDX bytes: 2 zero bytes, a type byte (0x08 = ubyte), ndim, big-endian dims."""
    fix = "reinstall the dataset (apt-get install --reinstall dataset-fashion-mnist)"
    if len(data) < 4:
        raise DataPrepError(f"{name} is truncated: {len(data)} bytes, no IDX header; {fix}")
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] != expected_ndim:
        raise DataPrepError(
            f"{name} has IDX magic {data[:4].hex()}, expected 0000{_UBYTE:02x}{expected_ndim:02x} "
            f"(unsigned bytes, {expected_ndim} dimensions); wrong or corrupt file, {fix}")
    header = 4 + 4 * expected_ndim
    if len(data) < header:
        raise DataPrepError(f"{name} is truncated inside its IDX header; {fix}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_ndim))
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != size:
        raise DataPrepError(
            f"{name} holds {len(data) - header} data bytes but its IDX header {list(dims)} "
            f"says {size}; the file is truncated or corrupt, {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path, array):
    """Writes a uint8 array as IDX (gzipped if the name ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
