"""Datasets on tiny fake trees written in the exact on-disk layouts."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import spquant.data as sd
from spquant.data import EventFileError
from spquant.data.datasets import random_split_indices

from .helpers import random_events


def test_nmnist_tree(tmp_path, rng):
    for split in ("Train", "Test"):
        for d in (0, 7):
            (tmp_path / split / str(d)).mkdir(parents=True)
            for k in range(2):
                sd.write_atis_bin(
                    tmp_path / split / str(d) / f"{k:05d}.bin", random_events(rng, 20 + k, 34, 34)
                )
    ds = sd.NMNIST(tmp_path, "train", transform=sd.ToFrames(5, (34, 34)))
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 7, 7]
    x, y = ds[3]
    assert x.shape == (5, 3, 34, 34) and y == 7
    raw = sd.NMNIST(tmp_path, "test")[1][0]
    assert raw.size == 21 and raw.dtype == sd.EVENT_DTYPE
    with pytest.raises(EventFileError, match=r"Train.*<digit>/<id>\.bin"):
        sd.NMNIST(tmp_path / "nowhere", "train")


def _caltech(tmp_path, rng, sizes):
    for c, n in sizes.items():
        (tmp_path / "Caltech101" / c).mkdir(parents=True)
        for k in range(n):
            sd.write_atis_bin(
                tmp_path / "Caltech101" / c / f"image_{k + 1:04d}.bin", random_events(rng, 10, 240, 180)
            )


def test_ncaltech101_authors_split(tmp_path, rng):
    _caltech(tmp_path, rng, {"BACKGROUND_Google": 3, "accordion": 10, "airplanes": 15})
    tr = sd.NCaltech101(tmp_path, "train")
    te = sd.NCaltech101(tmp_path, "test")
    assert tr.classes == ["accordion", "airplanes"]
    assert len(tr) == 20 and len(te) == 5  # random 80/20 of 25
    assert not set(tr.files) & set(te.files)
    all_files = sorted(set(tr.files) | set(te.files))
    tri, _ = random_split_indices(25, 0.8, seed=42)
    assert sorted(tr.files) == [all_files[i] for i in tri]
    assert sd.NCaltech101(tmp_path, "train", seed=1).files != tr.files  # seed matters
    pc = sd.NCaltech101(tmp_path, "test", split_mode="per_class")
    assert [f.name for f in pc.files] == [
        "image_0009.bin",
        "image_0010.bin",
        "image_0013.bin",
        "image_0014.bin",
        "image_0015.bin",
    ]
    assert len(sd.NCaltech101(tmp_path, "train", include_background=True).classes) == 3
    ev, label = tr[0]
    assert ev.size == 10 and label in (0, 1)


def test_random_split_is_fixed():
    # the authors' protocol: torch.randperm with a Generator seeded 42 -> same on every machine
    tr, te = random_split_indices(10, 0.9, seed=42)
    assert len(tr) == 9 and len(te) == 1
    import torch

    perm = torch.randperm(10, generator=torch.Generator().manual_seed(42)).numpy()
    assert te.tolist() == [int(perm[9])]


def test_cifar10dvs_tree(tmp_path, rng):
    for c in sd.datasets.CIFAR10_CLASSES:
        (tmp_path / c / c).mkdir(parents=True)  # the figshare zips hold a class folder
        for k in range(10):
            sd.write_aedat2(tmp_path / c / c / f"cifar10_{c}_{k}.aedat", random_events(rng, 5, 128, 128))
    tr, te = sd.CIFAR10DVS(tmp_path, "train"), sd.CIFAR10DVS(tmp_path, "test")
    assert len(tr) == 90 and len(te) == 10
    assert np.bincount(np.concatenate([tr.labels, te.labels])).tolist() == [10] * 10
    pc = sd.CIFAR10DVS(tmp_path, "test", split_mode="per_class")
    assert np.bincount(pc.labels).tolist() == [1] * 10
    assert all(f.name.endswith("_9.aedat") for f in pc.files)
    ev, y = te[0]
    assert ev.size == 5 and ev["x"].max() < 128
    os.remove(tmp_path / "truck" / "truck" / "cifar10_truck_0.aedat")
    import shutil

    shutil.rmtree(tmp_path / "truck")
    with pytest.raises(EventFileError, match=r"classes \['truck'\].*unzip <class>\.zip"):
        sd.CIFAR10DVS(tmp_path, "train")
    with pytest.raises(ValueError, match="split_mode"):
        sd.datasets._split_files(tmp_path, [1], [0], "train", "weird", 0.9, 42)


def test_dvsgesture_tree(tmp_path, rng):
    base = tmp_path / "DvsGesture"
    base.mkdir()
    ev = random_events(rng, 300, 128, 128, t_max=10_000)
    sd.write_aedat31(base / "user01_fluorescent.aedat", ev)
    (base / "user01_fluorescent_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,0,5000\n11,5000,9000\n"
    )
    (base / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n")
    (base / "trials_to_test.txt").write_text("")
    ds = sd.DVSGesture(tmp_path, "train")
    assert len(ds) == 2
    (a, la), (b, lb) = ds[0], ds[1]
    assert (la, lb) == (0, 10)
    assert a.size + b.size == int(np.sum(ev["t"] < 9000))
    assert a["t"].max() < 5000 and b["t"].min() >= 5000
    assert len(sd.DVSGesture(tmp_path, "test")) == 0
    (base / "trials_to_test.txt").write_text("user02_led.aedat\n")
    with pytest.raises(EventFileError, match="user02_led.aedat"):
        sd.DVSGesture(tmp_path, "test")
    with pytest.raises(EventFileError, match="trials_to_train.txt"):
        sd.DVSGesture(tmp_path / "empty", "train")


def test_gen1_windows(tmp_path, rng):
    d = tmp_path / "val"
    d.mkdir()
    ev = random_events(rng, 2000, 304, 240, t_max=200_000)
    sd.write_prophesee_dat(d / "rec_td.dat", ev)
    boxes = np.zeros(3, sd.readers.prophesee.BOX_DTYPE)
    boxes["ts"] = [100_000, 100_000, 150_000]
    boxes["x"], boxes["class_id"] = [1, 2, 3], [0, 1, 0]
    sd.write_gen1_boxes(d / "rec_bbox.npy", boxes)
    ds = sd.Gen1Detection(tmp_path, "val", window_us=50_000)
    assert len(ds) == 2
    win, b = ds[0]
    assert b["x"].tolist() == [1, 2]
    np.testing.assert_array_equal(win, ev[(ev["t"] > 50_000) & (ev["t"] <= 100_000)])
    ds2 = sd.Gen1Detection(tmp_path, "val", window_events=100)
    win2, b2 = ds2[1]
    np.testing.assert_array_equal(win2, ev[ev["t"] <= 150_000][-100:])
    assert b2["x"].tolist() == [3]
    os.remove(d / "rec_bbox.npy")
    with pytest.raises(EventFileError, match="rec_bbox.npy"):
        sd.Gen1Detection(tmp_path, "val")
    with pytest.raises(EventFileError, match=r"_td\.dat \+ <name>_bbox\.npy"):
        sd.Gen1Detection(tmp_path, "train")


def _cifar_batch(path, n, seed, protocol=2):
    r = np.random.default_rng(seed)
    d = {
        b"batch_label": b"training batch",
        b"labels": r.integers(0, 10, n).tolist(),
        b"data": r.integers(0, 256, (n, 3072)).astype(np.uint8),
        b"filenames": [b"x.png"] * n,
    }
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=protocol)
    return d


def test_cifar10_tree(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    ds_ = [_cifar_batch(base / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    t = _cifar_batch(base / "test_batch", 3, 9, protocol=4)
    tr = sd.CIFAR10(tmp_path, "train")
    assert len(tr) == 20 and tr.images.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(tr.images[4].reshape(-1), ds_[1][b"data"][0])
    assert tr.labels.tolist() == sum((d[b"labels"] for d in ds_), [])
    te = sd.CIFAR10(tmp_path, "test")
    x, y = te[2]
    assert x.shape == (3, 32, 32) and y == t[b"labels"][2]
    os.remove(base / "data_batch_3")
    with pytest.raises(EventFileError, match=r"\['data_batch_3'\].*cifar-10-python\.tar\.gz"):
        sd.CIFAR10(tmp_path, "train")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_refuses_malicious_pickle(tmp_path):
    p = tmp_path / "data_batch_1"
    with open(p, "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(
        EventFileError, match=r"unsafe or invalid pickle: refusing to load global (posix|os)\.system"
    ):
        sd.load_cifar10_batch(p)
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.float64), b"labels": [0]}, f)
    with pytest.raises(EventFileError, match="integer dtypes only"):
        sd.load_cifar10_batch(p)
    with open(p, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(EventFileError, match="dict"):
        sd.load_cifar10_batch(p)
    p.write_bytes(b"\x80\x02}q\x00")  # truncated pickle
    with pytest.raises(EventFileError, match="not a CIFAR-10 batch"):
        sd.load_cifar10_batch(p)


@pytest.mark.parametrize("cls", [sd.MNIST, sd.FashionMNIST, sd.KMNIST])
def test_idx_image_datasets(tmp_path, cls):
    sd.write_idx(
        tmp_path / "train-images-idx3-ubyte.gz", np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    )
    sd.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([4, 5, 6], np.uint8))
    ds = cls(tmp_path, "train")
    x, y = ds[1]
    assert len(ds) == 3 and y == 5 and x.shape == (28, 28) and x[0, 0] == (784 % 256)
    with pytest.raises(EventFileError, match="t10k-images-idx3-ubyte"):
        cls(tmp_path, "test")


def test_mnist_real(shared_mnist):
    ds = sd.MNIST(shared_mnist, "test")
    assert len(ds) == 10000 and ds[0][1] == 7  # the well-known first test label
