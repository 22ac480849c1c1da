"""data_prep.idx: IDX files are read exactly, and damaged ones are refused by name."""
import gzip

import numpy as np
import pytest

from data_prep import idx
from data_prep.errors import DataPrepError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    idx.write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / name, 3), images)


def test_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    idx.write_idx(path, np.arange(10, dtype=np.uint8))
    with pytest.raises(DataPrepError, match="IDX magic 00000801, expected 00000803"):
        idx.read_idx(path, 3)


def test_truncated_data_is_refused(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    idx.write_idx(path, np.zeros((4, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataPrepError, match=f"{path}.*truncated"):
        idx.read_idx(path, 3)


def test_truncated_gzip_is_refused(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    idx.write_idx(path, np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataPrepError, match="truncated or not a valid gzip"):
        idx.read_idx(path, 3)


def test_header_only_is_refused():
    with pytest.raises(DataPrepError, match="truncated"):
        idx.parse_idx(bytes([0, 0, 8, 3, 0, 0]), 3)
    with pytest.raises(DataPrepError, match="no IDX header"):
        idx.parse_idx(gzip.compress(b"")[:0], 1)
