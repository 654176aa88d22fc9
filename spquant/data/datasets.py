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
import pickletools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spquant.data.events import EventFileError, Recording, SensorSize, finish_events
from spquant.data.idx import load_idx_split
from spquant.data.readers._io import read_bytes
from spquant.data.readers.aedat2 import read_aedat2
from spquant.data.readers.aedat3 import read_aedat31, read_gesture_labels
from spquant.data.readers.aedat4 import read_aedat4
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
        self.files, self.labels, self._reader, self.transform = (
            files,
            np.asarray(labels, np.int64),
            reader,
            transform,
        )

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
            _missing(
                folder,
                "N-MNIST recordings",
                f"unzip Train.zip / Test.zip so that {folder}/<digit>/<id>.bin exist "
                "('spquant data fetch nmnist --root DIR')",
            )
        super().__init__(files, labels, lambda f: read_atis_bin(f, sensor_size=self.sensor_size), transform)


class NCaltech101(EventFolderDataset):
    """N-Caltech101: ``root/Caltech101/<class>/image_*.bin`` (ATIS events, up to 240x180).

    The ``BACKGROUND_Google`` folder is left out unless ``include_background=True`` (101 classes).
    Splits: ``split_mode='authors'`` (random 80/20, seed 42, default) or ``'per_class'``.
    """

    sensor_size = (240, 180)

    def __init__(
        self,
        root,
        split: str = "train",
        transform: Callable | None = None,
        split_mode: str = "authors",
        seed: int = 42,
        include_background: bool = False,
    ):
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
            _missing(
                Path(root) / "Caltech101",
                "N-Caltech101 recordings",
                f"unzip Caltech101.zip so that {Path(root) / 'Caltech101'}/<class>/image_<id>.bin exist "
                "('spquant data fetch ncaltech101 --root DIR')",
            )
        self.classes = classes
        files, labels = _split_files(root, files, labels, split, split_mode, 0.8, seed)
        super().__init__(files, labels, lambda f: read_atis_bin(f, sensor_size=self.sensor_size), transform)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _check_npz_sizes(path: str) -> None:
    """Refuse an .npz whose arrays declare more bytes than its members hold (checked from the .npy
    headers before anything is allocated; deflated members may expand at most 1000-fold)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1000 * max(
                    info.compress_size, 1
                ):
                    raise EventFileError(
                        path,
                        f"member {info.filename} claims {info.file_size} bytes from "
                        f"{info.compress_size} compressed: refused",
                    )
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy format version {version} in {info.filename}")
                    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    if need > info.file_size:
                        raise EventFileError(
                            path,
                            f"array {info.filename} declares {need} bytes but its member "
                            f"holds {info.file_size}: truncated or forged",
                        )
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise EventFileError(path, f"not a readable numpy .npz event file ({e})") from None


def read_spikingjelly_npz(path) -> np.ndarray:
    """One SpikingJelly ``events_np/<class>/<name>.npz`` file (arrays ``t, x, y, p`` of equal length,
    stored in SpikingJelly's convention) as an event array. Loaded without pickle."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EventFileError(path, "no such file")
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in "txyp" if k not in z.files]
            if missing:
                raise EventFileError(path, f"SpikingJelly event file lacks arrays {missing} (has {z.files})")
            cols = {k: np.asarray(z[k]) for k in "txyp"}
    except (ValueError, OSError, EOFError) as e:  # zip or npy damage, or object arrays
        raise EventFileError(path, f"not a readable numpy .npz event file ({e})") from None
    n = cols["t"].shape
    if any(c.ndim != 1 or c.shape != n or c.dtype.kind not in "iub" for c in cols.values()):
        raise EventFileError(path, "arrays t, x, y, p must be 1-D integer arrays of one length")
    if n[0] and (
        cols["x"].min() < 0 or cols["y"].min() < 0 or cols["x"].max() > 0xFFFF or cols["y"].max() > 0xFFFF
    ):
        raise EventFileError(path, "x / y outside 0..65535")
    return finish_events(
        path,
        cols["x"].astype(np.uint16),
        cols["y"].astype(np.uint16),
        cols["t"].astype(np.int64),
        cols["p"].astype(np.uint8),
        CIFAR10DVS.sensor_size,
    )


class CIFAR10DVS(EventFolderDataset):
    """CIFAR10-DVS (128x128 DVS128 recordings of moving CIFAR-10 pictures) in any of three layouts:

    * ``'aedat2'``: the original release, ``root/<class>/**/*.aedat`` (AEDAT 2.0);
    * ``'aedat4'``: the AEDAT 4 mirror tonic downloads, ``root/[CIFAR10DVS/]<class>/*.aedat4``
      (needs the optional ``aedat`` package);
    * ``'npz'``: SpikingJelly's converted copy, ``root/events_np/<class>/*.npz``.

    ``layout='auto'`` takes the first of these that has files. Events come out in SpikingJelly's
    orientation (upright pictures, p = 1 ON): the AEDAT 2.0 files are read with
    ``convention='spikingjelly'`` (see :mod:`spquant.data.readers.aedat2`), the npz files are already
    in it, and the AEDAT 4 mirror is taken as stored (tonic reads it the same way).

    Splits: ``split_mode='authors'`` (random 90/10, seed 42, default) or ``'per_class'`` (first 90 %
    of every class by sorted file name).
    """

    sensor_size = (128, 128)
    classes = CIFAR10_CLASSES
    LAYOUTS = ("aedat2", "aedat4", "npz")

    @staticmethod
    def find_files(root, layout: str = "auto") -> tuple[str, list[Path], list[int]]:
        """(layout, files, labels) of the first layout with recordings (every class must have some)."""
        root = Path(root)
        globs = {
            "aedat2": [(root, "**/*.aedat")],
            "aedat4": [(root, "*.aedat4"), (root / "CIFAR10DVS", "*.aedat4")],
            "npz": [(root / "events_np", "*.npz")],
        }
        if layout != "auto" and layout not in globs:
            raise ValueError(f"layout must be 'auto' or one of {list(globs)}, got {layout!r}")
        for name in globs if layout == "auto" else [layout]:
            for base, pattern in globs[name]:
                per_class = [sorted((base / c).glob(pattern)) for c in CIFAR10_CLASSES]
                if any(per_class):
                    missing = [c for c, fs in zip(CIFAR10_CLASSES, per_class) if not fs]
                    if missing:
                        _missing(
                            base,
                            f"CIFAR10-DVS ({name}) classes {missing}",
                            f"unzip <class>.zip so that every class folder {base}/<class>/ holds its recordings",
                        )
                    files = [f for fs in per_class for f in fs]
                    labels = [i for i, fs in enumerate(per_class) for _ in fs]
                    return name, files, labels
        _missing(
            root,
            "CIFAR10-DVS recordings",
            f"unzip <class>.zip into {root}/<class>/ for every class of "
            f"{CIFAR10_CLASSES} (AEDAT 2.0 '.aedat'; or tonic's '.aedat4' mirror; or SpikingJelly's "
            "events_np/<class>/*.npz) ('spquant data fetch cifar10-dvs --root DIR')",
        )

    def __init__(
        self,
        root,
        split: str = "train",
        transform: Callable | None = None,
        split_mode: str = "authors",
        seed: int = 42,
        layout: str = "auto",
    ):
        self.layout, files, labels = self.find_files(root, layout)
        files, labels = _split_files(root, files, labels, split, split_mode, 0.9, seed)
        readers = {
            "aedat2": lambda f: read_aedat2(f, layout="dvs128", convention="spikingjelly"),
            "aedat4": lambda f: read_aedat4(f, sensor_size=self.sensor_size),
            "npz": lambda f: Recording(read_spikingjelly_npz(f), self.sensor_size),
        }
        super().__init__(files, labels, readers[self.layout], transform)


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
            _missing(
                base,
                trials.name,
                f"unpack DvsGesture.tar.gz so that {base}/{trials.name}, the .aedat files and "
                "their _labels.csv files exist (see 'spquant data fetch dvs128-gesture')",
            )
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
        seg = ev[np.searchsorted(t, start, "left") : np.searchsorted(t, end, "left")]
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
    name = "Gen1"

    def __init__(
        self,
        root,
        split: str = "train",
        transform: Callable | None = None,
        window_us: int = 50_000,
        window_events: int | None = None,
    ):
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
            _missing(
                folder,
                f"{self.name} recordings",
                f"put <name>_td.dat + <name>_bbox.npy pairs into {folder} "
                f"(see 'spquant data fetch {self.name.lower()}')",
            )
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
        lo = (
            max(0, hi - self.window_events)
            if self.window_events
            else int(np.searchsorted(rec["t"], ts - self.window_us, side="right"))
        )
        ev = decode_dat_records(rec[lo:hi], self.pairs[k][0], self.sensor_size)
        boxes = self._boxes[k][self._boxes[k]["ts"] == ts]
        return (self.transform(ev) if self.transform else ev), boxes


class Megapixel1Detection(Gen1Detection):
    """The Prophesee 1-Megapixel automotive detection set (Perot et al. 2020; 1280x720 Gen4 sensor,
    ``EventCD`` DAT records of type 12): the same layout as Gen1, ``root/{train,val,test}/<name>_td.dat``
    + ``<name>_bbox.npy``, and the same windows. Classes 0-6 as released: pedestrian, two wheeler, car,
    truck, bus, traffic sign, traffic light."""

    sensor_size = (1280, 720)
    classes = ["pedestrian", "two wheeler", "car", "truck", "bus", "traffic sign", "traffic light"]
    name = "1Mpx"


# ------------------------------------------------------------------ static images
class _ArrayStandIn:
    """What the CIFAR unpickler makes instead of an ndarray: it only records the pickled state;
    :func:`_to_array` checks it and builds the array from the raw bytes."""

    def __setstate__(self, state):
        self.state = state


class _DtypeStandIn:
    """A dtype by name from the allowed list; its pickled state only contributes the byte order."""

    def __init__(self, code: str):
        self.code, self.order = code, "<"

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"unexpected dtype state {str(state)[:80]}")
        if any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("structured or sub-array dtypes are not part of a CIFAR batch")
        self.order = "<" if state[1] in ("|", "=") else state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.code).newbyteorder(self.order)


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


_CIFAR_DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")
MAX_CIFAR_BATCH_BYTES = 1 << 30


def _reconstruct(cls, shape, typecode):
    if cls is not _NDArrayClass:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return _ArrayStandIn()


def _dtype(code, align=False, copy=True):
    if isinstance(code, bytes):
        code = code.decode("latin-1")
    if code not in _CIFAR_DTYPES:
        raise pickle.UnpicklingError(
            f"dtype {str(code)[:20]!r} is not part of a CIFAR batch (integer dtypes only)"
        )
    return _DtypeStandIn(code)


def _scalar(dtype, data=None):
    if (
        not isinstance(dtype, _DtypeStandIn)
        or not isinstance(data, bytes)
        or len(data) != dtype.numpy().itemsize
    ):
        raise pickle.UnpicklingError("malformed numpy scalar")
    return int(np.frombuffer(data, dtype.numpy())[0])


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 text")
    return text.encode("latin-1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's python batches hold: builtin containers, str, bytes and int
    (opcodes, no globals) and numpy integer arrays/scalars. The numpy globals are replaced by
    stand-ins that record the pickled state; nothing of numpy runs on the file's data, so no object
    dtypes, structured dtypes or dtype flags reach numpy. Any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _NDArrayClass,
        ("numpy", "dtype"): _dtype,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("_codecs", "encode"): _codecs_encode,  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (not part of a CIFAR-10 batch)"
            ) from None


def _to_array(path, value, what: str) -> np.ndarray:
    """Check the state recorded by :class:`_ArrayStandIn` and build the array from its bytes."""
    st = getattr(value, "state", None)
    if not (
        isinstance(st, tuple)
        and len(st) == 5
        and isinstance(st[1], tuple)
        and isinstance(st[2], _DtypeStandIn)
        and isinstance(st[4], bytes)
        and len(st[1]) <= 4
        and all(isinstance(n, int) and 0 <= n <= MAX_CIFAR_BATCH_BYTES for n in st[1])
    ):
        raise EventFileError(path, f"CIFAR-10 {what!r} is not a plain integer array")
    shape, dtype, raw = st[1], st[2].numpy(), st[4]
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise EventFileError(
            path,
            f"CIFAR-10 {what!r}: shape {shape} needs {count * dtype.itemsize} bytes, "
            f"the pickle holds {len(raw)}",
        )
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if st[3] else "C")


def load_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely: images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]``.

    Only a dict with ``data`` (uint8 array [N, 3072]) and ``labels`` (N integers 0..9, a list or an
    integer array) is accepted; anything else raises :class:`EventFileError`.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.getsize(path) > MAX_CIFAR_BATCH_BYTES:
        raise EventFileError(path, f"{os.path.getsize(path)} bytes is too large for a CIFAR-10 batch")
    data = read_bytes(path)
    try:  # walk the opcodes first: a corrupt length would make the unpickler allocate it up front
        for _ in pickletools.genops(data):
            pass
    except Exception as e:  # genops reports malformed opcodes and lengths as ValueError and others
        raise EventFileError(path, f"not a CIFAR-10 batch: corrupt pickle ({str(e)[:200]})") from None
    try:
        d = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise EventFileError(path, f"unsafe or invalid pickle: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # the C unpickler reports malformed opcodes with many exception types
        raise EventFileError(path, f"not a CIFAR-10 batch ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(d, dict):
        raise EventFileError(path, "not a CIFAR-10 batch: the pickle does not hold a dict")
    if not all(isinstance(k, (bytes, str)) for k in d):
        raise EventFileError(path, "not a CIFAR-10 batch: dict keys must be strings")
    d = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise EventFileError(path, f"not a CIFAR-10 batch: keys {sorted(d)[:10]} lack 'data' / 'labels'")
    x = _to_array(path, d["data"], "data")
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise EventFileError(path, "CIFAR-10 'data' must be a uint8 array [N, 3072]")
    labels = d["labels"]
    if isinstance(labels, _ArrayStandIn):
        y = _to_array(path, labels, "labels").astype(np.int64)
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        if any(not 0 <= v <= 9 for v in labels):
            raise EventFileError(path, "CIFAR-10 labels must be 0..9")
        y = np.asarray(labels, dtype=np.int64)
    else:
        raise EventFileError(path, "CIFAR-10 'labels' must be a list or array of integers")
    if y.shape != (x.shape[0],):
        raise EventFileError(path, f"CIFAR-10 'labels' must be {x.shape[0]} integers, got shape {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
        raise EventFileError(path, f"CIFAR-10 labels must be 0..9, found {int(y.min())}..{int(y.max())}")
    return x.reshape(-1, 3, 32, 32).copy(), y


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
            _missing(
                base,
                f"CIFAR-10 batches {missing}",
                f"unpack cifar-10-python.tar.gz into {Path(root)} so that "
                f"{Path(root) / 'cifar-10-batches-py'}/{missing[0]} exists ('spquant data fetch cifar10 --root DIR')",
            )
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
