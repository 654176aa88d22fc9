"""IDX reader, real MNIST (md5 of the uncompressed content) and the embedded subset."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from spquant.data import EventFileError
from spquant.data.embedded import embedded_source_indices, load_embedded_mnist
from spquant.data.idx import load_idx_split, parse_idx, read_idx, write_idx
from spquant.data.make_assets import balanced_indices

MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (
        (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
        if dtype != "u1"
        else np.arange(24, dtype="u1").reshape(2, 3, 4)
    )
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == gz
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_idx_hand_bytes_and_errors(tmp_path):
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    assert parse_idx(raw).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(EventFileError, match="first two bytes must be zero"):
        parse_idx(b"\x01" + raw[1:], "f")
    with pytest.raises(EventFileError, match="unknown element type 0x07"):
        parse_idx(raw[:2] + b"\x07" + raw[3:], "f")
    with pytest.raises(EventFileError, match=r"f: .*shape \(2, 3\).*truncated"):
        parse_idx(raw[:-1], "f")
    with pytest.raises(EventFileError, match="trailing bytes"):
        parse_idx(raw + b"\x00", "f")
    (tmp_path / "c.gz").write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(EventFileError, match=r"c\.gz.*gzip"):
        read_idx(tmp_path / "c.gz")


def test_idx_split_missing_files_message(tmp_path):
    with pytest.raises(EventFileError, match=r"put train-images-idx3-ubyte\.gz .* into"):
        load_idx_split(tmp_path, "train")


def test_idx_split_fake_tree(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.ones((5, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    x, y = load_idx_split(tmp_path, "test")
    assert x.shape == (5, 28, 28) and y.tolist() == [0, 1, 2, 3, 4] and y.dtype == np.int64
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    with pytest.raises(EventFileError, match="expected 5 labels"):
        load_idx_split(tmp_path, "test")


def test_real_mnist_md5_and_shapes(shared_mnist):
    for name, md5 in MD5.items():
        data = gzip.decompress((shared_mnist / f"{name}.gz").read_bytes())
        assert hashlib.md5(data).hexdigest() == md5
    xtr, ytr = load_idx_split(shared_mnist, "train")
    xte, yte = load_idx_split(shared_mnist, "test")
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert ytr.min() == 0 and ytr.max() == 9 and xtr.dtype == np.uint8
    assert ytr[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels


def test_embedded_subset_is_balanced():
    xtr, ytr, xte, yte = load_embedded_mnist()
    assert xtr.shape == (6000, 28, 28) and xte.shape == (1000, 28, 28) and xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [600] * 10
    assert np.bincount(yte).tolist() == [100] * 10
    assert xtr.max() == 255 and 0.1 < (xtr > 0).mean() < 0.3  # real digits, not blanks


def test_embedded_subset_matches_real_mnist(shared_mnist):
    xtr, ytr, xte, yte = load_embedded_mnist()
    itr, ite = embedded_source_indices()
    rx, ry = load_idx_split(shared_mnist, "train")
    np.testing.assert_array_equal(rx[itr], xtr)
    np.testing.assert_array_equal(ry[itr], ytr)
    np.testing.assert_array_equal(itr, balanced_indices(ry, 600))
    tx, ty = load_idx_split(shared_mnist, "test")
    np.testing.assert_array_equal(tx[ite], xte)
    np.testing.assert_array_equal(ty[ite], yte)


def test_balanced_indices():
    labels = np.array([1, 0, 1, 0, 0, 1, 2, 2])
    assert balanced_indices(labels, 2, n_classes=3).tolist() == [0, 1, 2, 3, 6, 7]
    with pytest.raises(ValueError, match="class 2 has only 2"):
        balanced_indices(labels, 3, n_classes=3)
