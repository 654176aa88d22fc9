"""Torch datasets over the on-disk layouts of the paper's data sets (no hidden downloads).

Every class takes the data set folder (what ``spquant data fetch NAME --root DIR`` makes:
``DIR/NAME``), checks that the expected files are there and otherwise raises
:class:`~spquant.data.events.EventFileError` saying exactly what to put where. Event data sets return
``(events, label)`` (an ``EVENT_DTYPE`` array) or ``(transform(events), label)``.

Splits: ``split='train'|'test'``; ``split_mode`` picks how:

* N-MNIST, DVS128 Gesture, CIFAR-10, MNIST-style IDX sets: the official train/test files.
* CIFAR10-DVS (no official split): ``'authors'`` = random 90/10 over all 10,000 recordings with
  seed 42 (the SpQuant-SNN authors' protocol), ``'per_class'`` = first 90 % of every class (sorted
  file names) for training, the rest for testing (SpikingJelly's common split).
* N-Caltech101 (no official split): ``'authors'`` = random 80/20 with seed 42, ``'per_class'`` =
  first 80 % of every class.

The random splits use ``torch.randperm`` with a ``torch.Generator`` seeded with ``seed`` over the
sorted file list, so they are the same on every machine.

>>> import tempfile, os, numpy as np
>>> from spquant.data.events import make_events
>>> from spquant.data.readers import write_atis_bin
>>> root = tempfile.mkdtemp()
>>> os.makedirs(f"{root}/Train/3")
>>> write_atis_bin(f"{root}/Train/3/00001.bin", make_events([1], [2], [3], [1]))
>>> ds = NMNIST(root, "train")
>>> len(ds), ds[0][1]
(1, 3)
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spquant.data.events import EventFileError, SensorSize
from spquant.data.idx import load_idx_split
from spquant.data.readers._io import read_bytes
from spquant.data.readers.aedat2 import read_aedat2
from spquant.data.readers.aedat3 import read_aedat31, read_gesture_labels
from spquant.data.readers.atis import read_atis_bin
from spquant.data.readers.prophesee import decode_dat_records, memmap_prophesee_dat, read_gen1_boxes


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _missing(root, what: str, hint: str):
    raise EventFileError(root, f"missing {what}: {hint}")


def random_split_indices(n: int, train_fraction: float, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a seeded random split of ``n`` items (``round(n * fraction)`` train).

    >>> tr, te = random_split_indices(10, 0.8)
    >>> len(tr), len(te), sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    (8, 2, True)
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    k = int(round(n * train_fraction))
    return np.sort(perm[:k]), np.sort(perm[k:])


def per_class_split_indices(labels: np.ndarray, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """First ``fraction`` of every class (in the given order) for training, the rest for testing."""
    labels = np.asarray(labels)
    tr, te = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(idx.size * train_fraction))
        tr.append(idx[:k])
        te.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


class EventFolderDataset(Dataset):
    """Base class: a list of (file, label) read with ``reader(file)`` -> Recording."""

    sensor_size: SensorSize | None = None
    classes: list[str] = []

    def __init__(self, files: list[Path], labels: list[int], reader: Callable, transform: Callable | None):
        self.files, self.labels, self._reader, self.transform = files, np.asarray(labels, np.int64), reader, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        ev = self._reader(self.files[i]).events
        return (self.transform(ev) if self.transform else ev), int(self.labels[i])


def _split_files(root, files, labels, split, split_mode, fraction, seed):
    _check_split(split)
    labels = np.asarray(labels)
    if split_mode == "authors":
        tr, te = random_split_indices(len(files), fraction, seed)
    elif split_mode == "per_class":
        tr, te = per_class_split_indices(labels, fraction)
    else:
        raise ValueError(f"split_mode must be 'authors' or 'per_class', got {split_mode!r}")
    idx = tr if split == "train" else te
    return [files[i] for i in idx], labels[idx].tolist()


class NMNIST(EventFolderDataset):
    """N-MNIST: ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin`` (34x34 ATIS events)."""

    sensor_size = (34, 34)
    classes = [str(i) for i in range(10)]

    def __init__(self, root, split: str = "train", transform: Callable | None = None):
        _check_split(split)
        folder = Path(root) / ("Train" if split == "train" else "Test")
        files, labels = [], []
        for d in range(10):
            fs = sorted((folder / str(d)).glob("*.bin"))
            files += fs
            labels += [d] * len(fs)
        if not files:
            _missing(folder, "N-MNIST recordings", f"unzip Train.zip / Test.zip so that {folder}/<digit>/<id>.bin exist "
                     "('spquant data fetch nmnist --root DIR')")
        super().__init__(files, labels, lambda f: read_atis_bin(f, sensor_size=self.sensor_size), transform)


class NCaltech101(EventFolderDataset):
    """N-Caltech101: ``root/Caltech101/<class>/image_*.bin`` (ATIS events, up to 240x180).

    The ``BACKGROUND_Google`` folder is left out unless ``include_background=True`` (101 classes).
    Splits: ``split_mode='authors'`` (random 80/20, seed 42, default) or ``'per_class'``.
    """

    sensor_size = (240, 180)

    def __init__(self, root, split: str = "train", transform: Callable | None = None, split_mode: str = "authors",
                 seed: int = 42, include_background: bool = False):
        base = Path(root) / "Caltech101"
        if not base.is_dir():
            base = Path(root)
        classes = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
        if not include_background:
            classes = [c for c in classes if c != "BACKGROUND_Google"]
        files, labels = [], []
        for i, c in enumerate(classes):
            fs = sorted((base / c).glob("*.bin"))
            files += fs
            labels += [i] * len(fs)
        if not files:
            _missing(Path(root) / "Caltech101", "N-Caltech101 recordings",
                     f"unzip Caltech101.zip so that {Path(root) / 'Caltech101'}/<class>/image_<id>.bin exist "
                     "('spquant data fetch ncaltech101 --root DIR')")
        self.classes = classes
        files, labels = _split_files(root, files, labels, split, split_mode, 0.8, seed)
        super().__init__(files, labels, lambda f: read_atis_bin(f, sensor_size=self.sensor_size), transform)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CIFAR10DVS(EventFolderDataset):
    """CIFAR10-DVS: ``root/<class>/**/*.aedat`` (AEDAT 2.0, DVS128 addresses, 128x128).

    Splits: ``split_mode='authors'`` (random 90/10, seed 42, default) or ``'per_class'`` (first 90 %
    of every class by sorted file name).
    """

    sensor_size = (128, 128)
    classes = CIFAR10_CLASSES

    def __init__(self, root, split: str = "train", transform: Callable | None = None, split_mode: str = "authors",
                 seed: int = 42):
        files, labels, missing = [], [], []
        for i, c in enumerate(CIFAR10_CLASSES):
            fs = sorted((Path(root) / c).rglob("*.aedat"))
            if not fs:
                missing.append(c)
            files += fs
            labels += [i] * len(fs)
        if missing:
            _missing(root, f"CIFAR10-DVS classes {missing}",
                     f"unzip <class>.zip into {root}/<class>/ for every class of {CIFAR10_CLASSES} "
                     "('spquant data fetch cifar10dvs --root DIR')")
        files, labels = _split_files(root, files, labels, split, split_mode, 0.9, seed)
        super().__init__(files, labels, lambda f: read_aedat2(f, layout="dvs128"), transform)


class DVSGesture(Dataset):
    """DVS128 Gesture: ``root/DvsGesture/userNN_<light>.aedat`` + ``_labels.csv`` and
    ``trials_to_train.txt`` / ``trials_to_test.txt``. One sample per labelled gesture (11 classes,
    0-based). Recordings are read once and kept (the last one) to cut several gestures cheaply.
    """

    sensor_size = (128, 128)

    def __init__(self, root, split: str = "train", transform: Callable | None = None):
        _check_split(split)
        base = Path(root) / "DvsGesture"
        if not base.is_dir():
            base = Path(root)
        trials = base / ("trials_to_train.txt" if split == "train" else "trials_to_test.txt")
        if not trials.is_file():
            _missing(base, trials.name, f"unpack DvsGesture.tar.gz so that {base}/{trials.name}, the .aedat files and "
                     "their _labels.csv files exist (see 'spquant data fetch dvsgesture')")
        names = [ln.strip() for ln in trials.read_text().splitlines() if ln.strip()]
        self.samples: list[tuple[Path, int, int, int]] = []
        for name in names:
            f = base / name
            lab = base / (Path(name).stem + "_labels.csv")
            if not f.is_file() or not lab.is_file():
                _missing(base, f"{f.name} or {lab.name}", f"both listed by {trials.name} must be in {base}")
            for label, start, end in read_gesture_labels(lab).tolist():
                self.samples.append((f, int(label), int(start), int(end)))
        self.transform = transform
        self._cache: tuple[Path, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        f, label, start, end = self.samples[i]
        if self._cache is None or self._cache[0] != f:
            self._cache = (f, read_aedat31(f, sensor_size=self.sensor_size).events)
        ev = self._cache[1]
        t = ev["t"]
        seg = ev[np.searchsorted(t, start, "left"):np.searchsorted(t, end, "left")]
        return (self.transform(seg) if self.transform else seg), label


class Gen1Detection(Dataset):
    """Prophesee Gen1: ``root/<split>/<name>_td.dat`` + ``<name>_bbox.npy``; ``split`` in train/val/test.

    One sample per distinct box timestamp: the events in ``(ts - window_us, ts]`` (or, with
    ``window_events``, the last ``window_events`` events up to ``ts``: the authors used 25,000) and
    the boxes at ``ts`` (structured array, fields ``x, y, w, h, class_id`` ...; classes 0 = car,
    1 = pedestrian). Event files are memory-mapped, so only the window is read.
    """

    sensor_size = (304, 240)
    classes = ["car", "pedestrian"]

    def __init__(self, root, split: str = "train", transform: Callable | None = None, window_us: int = 50_000,
                 window_events: int | None = None):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        folder = Path(root) / split
        pairs = []
        for td in sorted(folder.glob("*_td.dat")):
            box = td.with_name(td.name[: -len("_td.dat")] + "_bbox.npy")
            if not box.is_file():
                _missing(folder, box.name, f"every <name>_td.dat in {folder} needs its <name>_bbox.npy")
            pairs.append((td, box))
        if not pairs:
            _missing(folder, "Gen1 recordings", f"put <name>_td.dat + <name>_bbox.npy pairs into {folder} "
                     "(see 'spquant data fetch gen1')")
        self.pairs = pairs
        self.samples: list[tuple[int, int]] = []  # (pair index, timestamp)
        self._boxes = []
        for k, (_, box) in enumerate(pairs):
            b = read_gen1_boxes(box)
            self._boxes.append(b)
            self.samples += [(k, int(ts)) for ts in np.unique(b["ts"])]
        self.transform, self.window_us, self.window_events = transform, window_us, window_events
        self._mm: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        k, ts = self.samples[i]
        if k not in self._mm:
            self._mm[k] = memmap_prophesee_dat(self.pairs[k][0])[0]
        rec = self._mm[k]
        hi = int(np.searchsorted(rec["t"], ts, side="right"))
        lo = max(0, hi - self.window_events) if self.window_events else int(np.searchsorted(rec["t"], ts - self.window_us, side="right"))
        ev = decode_dat_records(rec[lo:hi], self.pairs[k][0], self.sensor_size)
        boxes = self._boxes[k][self._boxes[k]["ts"] == ts]
        return (self.transform(ev) if self.transform else ev), boxes


# ------------------------------------------------------------------ static images
class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's python batches need: builtin containers/str/bytes/int (opcodes,
    no globals), numpy array reconstruction and ``_codecs.encode`` (bytes in protocol-2 pickles written
    by Python 3). Any other global (os.system, eval, builtins, ...) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not needed by CIFAR-10 batches)")


def load_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely: images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]``."""
    path = os.fspath(path)
    data = read_bytes(path)
    try:
        d = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise EventFileError(path, f"unsafe or invalid pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise EventFileError(path, f"not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise EventFileError(path, "not a CIFAR-10 batch: the pickle does not hold a dict")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise EventFileError(path, f"not a CIFAR-10 batch: keys {sorted(d)} lack 'data' / 'labels'")
    x, y = d["data"], np.asarray(d["labels"])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise EventFileError(path, "CIFAR-10 'data' must be a uint8 array [N, 3072]")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise EventFileError(path, f"CIFAR-10 'labels' must be {x.shape[0]} integers")
    return x.reshape(-1, 3, 32, 32).copy(), y.astype(np.int64)


class _InMemoryImages(Dataset):
    """A split held in memory as ``images`` / ``labels`` arrays, with an optional ``transform``."""

    images: np.ndarray
    labels: np.ndarray
    transform: Callable | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])


class CIFAR10(_InMemoryImages):
    """CIFAR-10 python batches: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (or the files
    directly in ``root``), read with a restricted unpickler. Returns ``(image uint8 [3, 32, 32] or
    transform(image), label)``; ``.images`` / ``.labels`` hold the whole split."""

    classes = CIFAR10_CLASSES

    def __init__(self, root, split: str = "train", transform: Callable | None = None):
        _check_split(split)
        base = Path(root) / "cifar-10-batches-py"
        if not base.is_dir():
            base = Path(root)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        missing = [n for n in names if not (base / n).is_file()]
        if missing:
            _missing(base, f"CIFAR-10 batches {missing}", f"unpack cifar-10-python.tar.gz into {Path(root)} so that "
                     f"{Path(root) / 'cifar-10-batches-py'}/{missing[0]} exists ('spquant data fetch cifar10 --root DIR')")
        parts = [load_cifar10_batch(base / n) for n in names]
        self.images = np.concatenate([p[0] for p in parts])
        self.labels = np.concatenate([p[1] for p in parts])
        self.transform = transform



class IDXImages(_InMemoryImages):
    """MNIST-layout IDX image sets (MNIST, Fashion-MNIST, KMNIST): ``root/{train,t10k}-images-idx3-ubyte[.gz]``
    and the label files. Returns ``(image uint8 [28, 28] or transform(image), label)``."""

    fetch_name = "mnist"

    def __init__(self, root, split: str = "train", transform: Callable | None = None):
        self.images, self.labels = load_idx_split(root, split)
        self.transform = transform



class MNIST(IDXImages):
    """MNIST (LeCun, Cortes, Burges) in IDX format."""


class FashionMNIST(IDXImages):
    """Fashion-MNIST (Zalando) in IDX format."""

    fetch_name = "fashion-mnist"


class KMNIST(IDXImages):
    """Kuzushiji-MNIST in IDX format."""

    fetch_name = "kmnist"
