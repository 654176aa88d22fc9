"""Events -> frames once, into an on-disk memory-mapped cache that training streams from.

``spquant data prepare <recipe>`` (or :func:`prepare`) reads every recording of a data set once,
turns it into frames with the recipe's preprocessing (:class:`FrameSpec`), and writes them into one
numpy ``.npy`` file per split, opened as a memory map, so a split never has to fit in RAM::

    <cache>/<dataset>-<key>/
        index.json                  what is in the cache; written last, atomically
        train.frames.npy            [N, T, C, H, W] (events) or [N, C, H, W] (static images)
        train.labels.npy            [N] int64
        train.done/00000 ...        one completion marker per shard of ``SHARD`` samples
        test.*

``key`` is a hash of the data set, its preprocessing settings and the list of source files (names
and sizes), so a changed setting or file gets a new cache. Work is split into shards done by worker
processes; a shard's marker is written after its frames are flushed, so an interrupted run resumes
where it stopped. Frames are stored as uint8 when they are integers (event counts saturate at 255;
the 'polarity3' colouring is 0/1; crop and pad keep integers) and float16 after a resize.

Reading: :class:`FrameDataset` (a torch Dataset over the memory map, with the recipe's train-time
augmentation) and :func:`frame_loader` (a DataLoader with worker processes that yields
``x [T, B, C, H, W]`` float32, ``y [B]``). :func:`load_frames` does it for a recipe (the run
pipeline's ``load_split`` calls it)::

    spec = FrameSpec.from_config(config)
    cache = prepare(config.data.dataset, root, spec, cache_root)
    train = FrameDataset(cache, "train", T=spec.T, augment=spec.augment)
    for x, y in frame_loader(train, batch_size=64, shuffle=True, workers=2, seed=0): ...

>>> import tempfile, os
>>> from spquant.data.events import make_events
>>> from spquant.data.readers import write_atis_bin
>>> root = tempfile.mkdtemp()
>>> for split in ("Train", "Test"):
...     os.makedirs(f"{root}/{split}/3")
...     write_atis_bin(f"{root}/{split}/3/1.bin", make_events([1, 2], [2, 3], [0, 50], [1, 0]))
>>> spec = FrameSpec(T=2, polarity="count2", size=(34, 34))
>>> cache = prepare("nmnist", root, spec, tempfile.mkdtemp(), workers=0, progress=False)
>>> ds = FrameDataset(cache, "train")
>>> x, y = ds[0]
>>> tuple(x.shape), y, float(x.sum())
((2, 2, 34, 34), 3, 2.0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spquant.data.events import EventFileError
from spquant.data.transforms import FITS, FRAME_MODES, augment_batch, fit_frames, parse_augment, to_frames

__all__ = [
    "FrameSpec",
    "DATASETS",
    "EVENT_DATASETS",
    "open_source",
    "prepare",
    "FrameDataset",
    "frame_loader",
    "collate_frames",
    "cache_key",
    "CacheInfo",
    "open_cache",
    "default_cache_root",
    "load_frames",
    "frames_are_integer",
]

CACHE_FORMAT = 1
SHARD = 64  # samples per shard (one completion marker each)


@dataclass(frozen=True)
class FrameSpec:
    """Every preprocessing choice that decides the cached frames (and the train-time augmentation).

    * ``T``: frames per sample (time bins); ``bins``: ``'time'`` (equal time spans, the authors'
      choice) or ``'count'`` (equal event counts, SpikingJelly's ``split_by='number'``).
    * ``polarity``: ``'polarity3'`` (the authors' 3-channel colouring: latest event per pixel and bin,
      ON red, OFF green) or ``'count2'`` (2-channel OFF/ON event counts).
    * ``size``: (H, W) of the stored frames (None = the sensor's); ``fit``: how frames reach it,
      ``'resize'`` (area / bilinear: fractional values), ``'crop'`` or ``'pad'`` (centred; integers
      stay integers).
    * ``integer``: require integer frames, so the integer-only deployment sees exactly what training
      saw: a ``'resize'`` must then shrink by whole factors and is done as sum pooling (counts are
      added, 128x128 -> 64x64 sums 2x2 blocks); any other resize is refused.
    * ``split_mode``, ``seed``: split of the sets without an official one ('authors' / 'per_class').
    * ``layout``: CIFAR10-DVS on-disk layout ('auto', 'aedat2', 'aedat4', 'npz').
    * ``augment`` (+ ``roll_px``, ``crop_pad``): train-time augmentation
      (:func:`~spquant.data.transforms.augment_batch`); not part of the cache key.
    * ``static``: the data set is static images (CIFAR-10, MNIST): no binning, direct encoding.
    """

    T: int = 10
    bins: str = "time"
    polarity: str = "polarity3"
    size: tuple[int, int] | None = None
    fit: str = "resize"
    integer: bool = False
    split_mode: str = "authors"
    seed: int = 42
    layout: str = "auto"
    augment: str = "none"
    roll_px: int = 5
    crop_pad: int = 4

    def __post_init__(self):
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        if self.bins not in ("time", "count"):
            raise ValueError(f"bins must be 'time' or 'count', got {self.bins!r}")
        if self.polarity not in FRAME_MODES:
            raise ValueError(f"polarity must be one of {list(FRAME_MODES)}, got {self.polarity!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.split_mode not in ("authors", "per_class"):
            raise ValueError(f"split_mode must be 'authors' or 'per_class', got {self.split_mode!r}")
        if self.size is not None:
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        parse_augment(self.augment)

    @classmethod
    def from_config(cls, config) -> FrameSpec:
        """The spec of a recipe: ``model.T``, ``model.input`` (size), ``model.in_channels`` (2 ->
        'count2', 3 -> 'polarity3' unless ``data.polarity`` says otherwise) and the ``data`` keys
        ``bins``, ``polarity``, ``resize`` (fit), ``integer``, ``split``, ``layout``, ``augment``,
        ``roll_px``, ``crop_pad``."""
        d, m = config.data, config.model
        pol = getattr(d, "polarity", "auto")
        if pol == "auto":
            pol = {2: "count2", 3: "polarity3"}.get(m.in_channels, "polarity3")
        return cls(
            T=m.T,
            bins=getattr(d, "bins", "time"),
            polarity=pol,
            size=tuple(m.input),
            fit=getattr(d, "resize", "resize"),
            integer=getattr(d, "integer", False),
            split_mode=getattr(d, "split", "authors"),
            seed=42,
            layout=getattr(d, "layout", "auto"),
            augment=getattr(d, "augment", "none"),
            roll_px=getattr(d, "roll_px", 5),
            crop_pad=getattr(d, "crop_pad", 4),
        )

    def cache_fields(self, static: bool) -> dict[str, Any]:
        """The settings that decide the cached arrays (augmentation does not)."""
        keys = (
            ["size", "fit", "split_mode", "seed", "layout"]
            if static
            else ["T", "bins", "polarity", "size", "fit", "split_mode", "seed", "layout"]
        )
        return {k: getattr(self, k) for k in keys}


# ------------------------------------------------------------------ data sets
def _source_factories() -> dict[str, tuple[Callable, bool, tuple[str, ...]]]:
    """name -> (factory(root, split, spec) -> torch Dataset of (events | image, label), static, splits)."""
    from spquant.data import datasets as ds

    return {
        "nmnist": (lambda r, s, sp: ds.NMNIST(r, s), False, ("train", "test")),
        "ncaltech101": (
            lambda r, s, sp: ds.NCaltech101(r, s, split_mode=sp.split_mode, seed=sp.seed),
            False,
            ("train", "test"),
        ),
        "cifar10-dvs": (
            lambda r, s, sp: ds.CIFAR10DVS(r, s, split_mode=sp.split_mode, seed=sp.seed, layout=sp.layout),
            False,
            ("train", "test"),
        ),
        "dvs128-gesture": (lambda r, s, sp: ds.DVSGesture(r, s), False, ("train", "test")),
        "cifar10": (lambda r, s, sp: ds.CIFAR10(r, s), True, ("train", "test")),
    }


DATASETS = ("nmnist", "ncaltech101", "cifar10-dvs", "dvs128-gesture", "cifar10")
# the event data sets that training streams from the cache (static CIFAR-10 is small: held in memory)
EVENT_DATASETS = ("nmnist", "ncaltech101", "cifar10-dvs", "dvs128-gesture")


def open_source(dataset: str, root, split: str, spec: FrameSpec):
    """The raw data set object of ``dataset`` (events or images, label per sample) and whether it is static."""
    factories = _source_factories()
    if dataset not in factories:
        raise ValueError(f"no frame adapter for data set {dataset!r}; known: {', '.join(DATASETS)}")
    make, static, _ = factories[dataset]
    return make(root, split, spec), static


def _sensor_of(source) -> tuple[int, int]:
    size = getattr(source, "sensor_size", None)
    if size is None:
        raise ValueError(f"{type(source).__name__} does not declare a sensor size")
    return int(size[0]), int(size[1])


def _frame_shape(source, spec: FrameSpec, static: bool) -> tuple[tuple[int, ...], np.dtype]:
    if static:
        img = np.asarray(source[0][0]) if len(source) else np.zeros((1, 1, 1), np.uint8)
        chw = img.shape if img.ndim == 3 else (1, *img.shape)
        h, w = spec.size or chw[1:]
        resized = spec.size is not None and tuple(spec.size) != tuple(chw[1:]) and spec.fit == "resize"
        return (chw[0], h, w), np.dtype(np.float16 if resized else np.uint8)
    sw, sh = _sensor_of(source)
    h, w = spec.size or (sh, sw)
    return (spec.T, FRAME_MODES[spec.polarity], h, w), np.dtype(
        np.uint8 if _integer_fit(spec, (sw, sh)) else np.float16
    )


def _integer_fit(spec: FrameSpec, sensor: tuple[int, int]) -> bool:
    """Whether the frames stay integers: no resize, crop / pad, or (``integer``) a shrink by whole
    factors, done as sum pooling. ``integer`` with any other resize is refused."""
    sw, sh = sensor
    h, w = spec.size or (sh, sw)
    if (h, w) == (sh, sw) or spec.fit != "resize":
        return True
    if spec.integer:
        if sh % h or sw % w:
            raise ValueError(
                f"integer frames cannot be resized from the {sh}x{sw} sensor to {h}x{w} (not a whole "
                "shrink factor): use data.resize 'crop' or 'pad', a size that divides the sensor, or "
                "data.integer = false"
            )
        return True
    return False


def frames_are_integer(config) -> bool:
    """Whether a recipe's prepared frames are integers (what an exact integer export needs), from its
    settings and the data set's sensor size alone (no files are read)."""
    from spquant.data import datasets as ds

    sensors = {
        "nmnist": ds.NMNIST,
        "ncaltech101": ds.NCaltech101,
        "cifar10-dvs": ds.CIFAR10DVS,
        "dvs128-gesture": ds.DVSGesture,
    }
    cls = sensors.get(config.data.dataset)
    if cls is None:
        return True  # static images: uint8 pixels
    return _integer_fit(FrameSpec.from_config(config), tuple(cls.sensor_size))


def make_frames(sample, source, spec: FrameSpec, static: bool, shape, dtype) -> np.ndarray:
    """One sample (events or image) -> its cached frames (``shape``, ``dtype``)."""
    if static:
        img = np.asarray(sample)
        x = torch.from_numpy(img if img.ndim == 3 else img[None])
        if dtype == np.float16:
            x = fit_frames(x.to(torch.float32) / 255.0, shape[-2:], spec.fit)
        else:
            x = fit_frames(x, shape[-2:], spec.fit)
        return x.numpy().astype(dtype, copy=False)
    w, h = _sensor_of(source)
    H, W = shape[-2:]
    if dtype == np.uint8 and spec.fit == "resize" and (H, W) != (h, w):  # integer shrink: sum pooling
        fr = to_frames(sample, (w, h), spec.T, spec.polarity, bins=spec.bins, dtype=np.int64)
        fr = fr.reshape(*fr.shape[:2], H, h // H, W, w // W).sum(axis=(3, 5))
        return np.minimum(fr, 255).astype(np.uint8)
    fr = to_frames(
        sample,
        (w, h),
        spec.T,
        spec.polarity,
        bins=spec.bins,
        dtype=np.uint8 if dtype == np.uint8 else np.float32,
    )
    if fr.shape[-2:] != (H, W):
        fr = fit_frames(torch.from_numpy(fr), (H, W), spec.fit).numpy()
    return fr.astype(dtype, copy=False)


# ------------------------------------------------------------------ the cache
def default_cache_root() -> Path:
    """``$SPQUANT_CACHE/frames`` (default ``~/.cache/spquant/frames``)."""
    return Path(os.environ.get("SPQUANT_CACHE", Path.home() / ".cache" / "spquant")).expanduser() / "frames"


@dataclass(frozen=True)
class CacheInfo:
    """A prepared cache: its folder and parsed ``index.json``."""

    path: Path
    index: dict
    made: int = 0  # samples framed by the call that returned this (0: the cache was already complete)

    def split(self, split: str) -> dict:
        if split not in self.index["splits"]:
            raise KeyError(f"cache {self.path} has no split {split!r} (has {sorted(self.index['splits'])})")
        return self.index["splits"][split]


def _fingerprint(files) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            size = os.path.getsize(f)
        except OSError:
            size = -1
        h.update(f"{Path(f).name}\0{size}\n".encode())
    return h.hexdigest()[:16]


def cache_key(dataset: str, spec: FrameSpec, static: bool, sources: dict) -> str:
    """Hash of the data set name, the cache-deciding settings and the source files (names, sizes)."""
    files = {
        s: _fingerprint(getattr(src, "files", None) or [p[0] for p in getattr(src, "samples", [])])
        for s, src in sources.items()
    }
    n = {s: len(src) for s, src in sources.items()}
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "dataset": dataset,
            "spec": spec.cache_fields(static),
            "files": files,
            "n": n,
        },
        sort_keys=True,
        default=list,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def _labels_of(source) -> np.ndarray:
    if hasattr(source, "labels"):
        return np.asarray(source.labels, np.int64)
    if hasattr(source, "samples"):  # DVSGesture: (file, label, start, end)
        return np.asarray([s[1] for s in source.samples], np.int64)
    return np.asarray([source[i][1] for i in range(len(source))], np.int64)


# worker-process state: the source data set and the open memory map, made once per process
_WORKER: dict[str, Any] = {}


def _init_worker(dataset, root, split, spec, frames_path, shape, dtype, source=None):
    torch.set_num_threads(1)
    static = _source_factories()[dataset][1]
    if source is None:
        source, static = open_source(dataset, root, split, spec)
    _WORKER.update(
        source=source,
        static=static,
        spec=spec,
        shape=tuple(shape),
        dtype=np.dtype(dtype),
        frames=np.load(frames_path, mmap_mode="r+"),
    )


def _do_shard(shard: int, n: int, done_dir: str) -> int:
    w = _WORKER
    lo, hi = shard * SHARD, min(n, (shard + 1) * SHARD)
    for i in range(lo, hi):
        sample = w["source"][i][0]
        w["frames"][i] = make_frames(sample, w["source"], w["spec"], w["static"], w["shape"], w["dtype"])
    w["frames"].flush()
    _atomic_write_bytes(Path(done_dir) / f"{shard:05d}", b"")
    return hi - lo


def _prepare_split(
    dataset, root, split, spec, source, static, out: Path, workers: int, progress: bool
) -> dict:
    n = len(source)
    shape, dtype = _frame_shape(source, spec, static)
    frames_path = out / f"{split}.frames.npy"
    labels_path = out / f"{split}.labels.npy"
    done_dir = out / f"{split}.done"
    done_dir.mkdir(exist_ok=True)
    full_shape = (n, *shape)
    fresh = True
    if frames_path.is_file():
        try:
            mm = np.load(frames_path, mmap_mode="r")
            fresh = mm.shape != full_shape or mm.dtype != dtype
            del mm
        except (ValueError, OSError):
            fresh = True
    if fresh:  # a new (sparse) file; any old markers belong to another file
        for m in done_dir.iterdir():
            m.unlink()
        tmp = out / f".{split}.frames.{os.getpid()}.tmp.npy"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=full_shape)
        del mm
        os.replace(tmp, frames_path)
    if not labels_path.is_file():
        _atomic_save_npy(labels_path, _labels_of(source))
    n_shards = -(-n // SHARD)
    todo = [s for s in range(n_shards) if not (done_dir / f"{s:05d}").is_file()]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=n,
            initial=n - sum(min(n, (s + 1) * SHARD) - s * SHARD for s in todo),
            desc=f"{dataset} {split}",
            unit="sample",
            dynamic_ncols=True,
        )
    t0 = time.perf_counter()
    made = 0
    try:
        if workers <= 1 or len(todo) <= 1:
            threads = torch.get_num_threads()
            _init_worker(dataset, root, split, spec, str(frames_path), shape, dtype.str, source)
            torch.set_num_threads(threads)
            for s in todo:
                k = _do_shard(s, n, str(done_dir))
                made += k
                if bar:
                    bar.update(k)
            _WORKER.clear()
        else:
            with ProcessPoolExecutor(
                workers,
                initializer=_init_worker,
                initargs=(dataset, root, split, spec, str(frames_path), shape, dtype.str),
            ) as ex:
                futures = [ex.submit(_do_shard, s, n, str(done_dir)) for s in todo]
                try:
                    for f in as_completed(futures):
                        k = f.result()
                        made += k
                        if bar:
                            bar.update(k)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    return {
        "n": n,
        "shape": list(full_shape),
        "dtype": dtype.str,
        "frames": frames_path.name,
        "labels": labels_path.name,
        "made": made,
        "seconds": round(seconds, 3),
    }


def prepare(
    dataset: str,
    root,
    spec: FrameSpec,
    cache_root,
    splits=("train", "test"),
    workers: int | None = None,
    progress: bool = True,
) -> CacheInfo:
    """Make (or finish, or find) the frame cache of ``dataset`` under ``cache_root``; returns it.

    ``workers``: processes (None = CPU count, 0/1 = in this process). Safe to interrupt and rerun.
    """
    root = Path(root)
    sources, static = {}, False
    for s in splits:
        sources[s], static = open_source(dataset, root, s, spec)
    key = cache_key(dataset, spec, static, sources)
    out = Path(cache_root) / f"{dataset}-{key}"
    index_path = out / "index.json"
    if index_path.is_file():
        info = CacheInfo(out, json.loads(index_path.read_text()))
        if info.index.get("complete") and all(s in info.index["splits"] for s in splits):
            return info
    out.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = os.cpu_count() or 1
    meta = {}
    for s in splits:
        meta[s] = _prepare_split(dataset, root, s, spec, sources[s], static, out, workers, progress)
    index = {
        "format": CACHE_FORMAT,
        "dataset": dataset,
        "key": key,
        "static": static,
        "spec": dataclasses.asdict(spec),
        "sensor_size": None if static else list(_sensor_of(sources[splits[0]])),
        "classes": list(getattr(sources[splits[0]], "classes", []) or []),
        "splits": meta,
        "complete": True,
    }
    _atomic_write_bytes(index_path, json.dumps(index, indent=1, default=list).encode())
    return CacheInfo(out, index, made=sum(m["made"] for m in meta.values()))


def open_cache(path) -> CacheInfo:
    """A finished cache folder (its ``index.json`` says complete)."""
    path = Path(path)
    index_path = path / "index.json"
    if not index_path.is_file():
        raise EventFileError(
            path, "not a finished frame cache (no index.json): run 'spquant data prepare' again"
        )
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as e:
        raise EventFileError(index_path, f"damaged cache index ({e})") from None
    if index.get("format") != CACHE_FORMAT or not index.get("complete"):
        raise EventFileError(index_path, "cache index of another format or unfinished")
    return CacheInfo(path, index)


# ------------------------------------------------------------------ reading
class FrameDataset(Dataset):
    """A split of a prepared cache: ``(frames float32 [T, C, H, W], label)`` per sample.

    Frames are read from the memory map on demand (each DataLoader worker opens its own). Static
    images are scaled by 1/255 (when stored as uint8) and repeated ``T`` times; event frames are
    returned as stored (counts or 0/1). ``augment`` (train split) is applied per sample
    (:func:`~spquant.data.transforms.augment_batch`).
    """

    def __init__(
        self,
        cache,
        split: str,
        T: int | None = None,
        augment: str = "none",
        roll_px: int = 5,
        crop_pad: int = 4,
        indices=None,
    ):
        self.cache = cache if isinstance(cache, CacheInfo) else open_cache(cache)
        meta = self.cache.split(split)
        self.static = bool(self.cache.index["static"])
        self.frames_path = self.cache.path / meta["frames"]
        self.labels = np.load(self.cache.path / meta["labels"], allow_pickle=False)
        shape = tuple(meta["shape"])
        if self.labels.shape != (shape[0],):
            raise EventFileError(
                self.cache.path, f"{split}: {self.labels.shape[0]} labels for {shape[0]} samples"
            )
        if self.static and T is None:
            raise ValueError("static images need T (how many times to repeat them)")
        if not self.static and T is not None and T != shape[1]:
            raise ValueError(
                f"the cache holds T={shape[1]} frames per sample, asked for T={T}: prepare with model.T={T}"
            )
        self.T = T if self.static else shape[1]
        self.sample_shape = shape[1:]
        self.augment = parse_augment(augment)
        self.roll_px, self.crop_pad = roll_px, crop_pad
        self.indices = None if indices is None else np.asarray(indices, np.int64)
        self._mm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0] if self.indices is None else self.indices.shape[0])

    def __getstate__(self):  # worker processes open their own map; never pickle the mapped frames
        state = dict(self.__dict__)
        state["_mm"] = None
        return state

    def _frames(self) -> np.ndarray:
        if self._mm is None or self._mm[0] != os.getpid():
            mm = np.load(self.frames_path, mmap_mode="r")
            if tuple(mm.shape[1:]) != self.sample_shape:
                raise EventFileError(
                    self.frames_path, f"frame array of shape {mm.shape} does not match the index"
                )
            self._mm = (os.getpid(), mm)
        return self._mm[1]

    def __getitem__(self, i: int):
        j = int(i if self.indices is None else self.indices[i])
        raw = np.array(self._frames()[j])
        x = torch.from_numpy(raw).to(torch.float32)
        if self.static and raw.dtype == np.uint8:
            x.mul_(1 / 255)
        if self.augment:
            x = augment_batch(x[None], self.augment, roll_px=self.roll_px, crop_pad=self.crop_pad)[0]
        if self.static:
            x = x.unsqueeze(0).expand(self.T, *x.shape)
        return x, int(self.labels[j])


def load_frames(config, split: str, progress: bool | None = None, augment: bool = True) -> FrameDataset:
    """The ``split`` of a recipe's prepared data set as a :class:`FrameDataset`, preparing (or
    finishing) the cache first: ``config.data.dataset`` in :data:`DATASETS`, the data folder from
    ``data.root`` / ``$SPQUANT_DATA`` (:mod:`spquant.data.roots`), the cache from ``data.cache`` /
    :func:`default_cache_root`, ``data.train_subset`` / ``test_subset`` as a random subset seeded
    by ``train.seed``; the train split carries ``data.augment`` unless ``augment=False``."""
    from spquant.data.roots import data_root

    d = config.data
    spec = FrameSpec.from_config(config)
    cache_root = Path(d.cache).expanduser() if d.cache else default_cache_root()
    if progress is None:
        progress = bool(getattr(config.run, "progress", True))
    cache = prepare(
        d.dataset, data_root(d.dataset, d.root), spec, cache_root, workers=None, progress=progress
    )
    n_all = cache.split(split)["shape"][0]
    limit = d.train_subset if split == "train" else d.test_subset
    indices = None
    if limit and limit < n_all:
        g = torch.Generator().manual_seed(int(config.train.seed) + 12345)
        indices = torch.randperm(n_all, generator=g)[:limit].sort().values.numpy()
    return FrameDataset(
        cache,
        split,
        T=config.model.T,
        augment=spec.augment if split == "train" and augment else "none",
        roll_px=spec.roll_px,
        crop_pad=spec.crop_pad,
        indices=indices,
    )


def collate_frames(batch):
    """[(frames [T, C, H, W], label)] -> (x [T, B, C, H, W] float32, y [B] int64)."""
    xs, ys = zip(*batch)
    return torch.stack(xs, 1).contiguous(), torch.as_tensor(ys, dtype=torch.int64)


def _seed_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


def frame_loader(
    dataset: Dataset,
    batch_size: int = 64,
    shuffle: bool = True,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over a :class:`FrameDataset` yielding ``(x [T, B, C, H, W], y [B])``; shuffling
    and the workers' augmentation draws derive from ``seed``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_frames,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker,
        persistent_workers=workers > 0,
    )
