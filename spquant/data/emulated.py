"""Emulated event datasets cached on disk (e.g. MNIST -> N-MNIST-like events).

Cache layout (one folder per emulator configuration, named by :meth:`EmulatorConfig.key`)::

    DIR/meta.json             emulator parameters, packing, counts, time taken
    DIR/{split}_events.npy    all events of the split, concatenated (packed, see below)
    DIR/{split}_offsets.npy   int64 [N + 1]: sample i is events[offsets[i]:offsets[i + 1]]
    DIR/{split}_labels.npy    int64 [N]

Events are packed into one uint32 each when the sensor is at most 64x64 and the recording shorter
than 2**19 us (t in bits 0-18, x 19-24, y 25-30, p 31: 4 bytes per event instead of 13); otherwise
they are stored as ``EVENT_DTYPE``.

>>> import tempfile, numpy as np
>>> imgs = np.zeros((2, 28, 28), np.uint8); imgs[:, 10:18, 12:16] = 255
>>> d = emulate_to_cache(imgs, np.array([3, 7]), tempfile.mkdtemp(), "train", progress=False)
>>> ds = EmulatedEvents(d, "train")
>>> len(ds), ds[1][1], ds[0][0].dtype.names
(2, 7, ('x', 'y', 't', 'p'))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from spquant.data.emulator import EmulatorConfig, emulate_batch
from spquant.data.events import EVENT_DTYPE, EventFileError


def can_pack(cfg: EmulatorConfig) -> bool:
    return cfg.sensor_size[0] <= 64 and cfg.sensor_size[1] <= 64 and cfg.duration_us < 2**19


def pack_events(ev: np.ndarray) -> np.ndarray:
    """Pack events (x, y < 64, t < 2**19) into uint32."""
    return (
        ev["t"].astype(np.uint32)
        | (ev["x"].astype(np.uint32) << 19)
        | (ev["y"].astype(np.uint32) << 25)
        | (ev["p"].astype(np.uint32) << 31)
    )


def unpack_events(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_events`."""
    packed = np.asarray(packed, np.uint32)
    ev = np.empty(packed.size, EVENT_DTYPE)
    ev["t"] = packed & 0x7FFFF
    ev["x"] = (packed >> 19) & 0x3F
    ev["y"] = (packed >> 25) & 0x3F
    ev["p"] = packed >> 31
    return ev


def _work(args):
    images, start, cfg, packed = args
    ev, off = emulate_batch(images, cfg, index_offset=start, return_offsets=True)
    return (pack_events(ev) if packed else ev), off


def images_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def emulate_to_cache(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir,
    split: str,
    config: EmulatorConfig | None = None,
    *,
    workers: int | None = None,
    chunk: int = 500,
    progress: bool = True,
) -> Path:
    """Emulate ``images`` and write the split's cache files into ``out_dir`` (see module doc).

    ``workers`` processes (default: all CPU cores) emulate chunks of ``chunk`` images (each image's
    events depend only on the image, the configuration and its index, not on the chunking); a tqdm
    progress bar counts images. Returns ``out_dir``.
    """
    cfg = config or EmulatorConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images)
    labels = np.asarray(labels, np.int64)
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"need images [N, H, W] and labels [N], got {images.shape} and {labels.shape}")
    packed = can_pack(cfg)
    n = images.shape[0]
    jobs = [(images[s : s + chunk], s, cfg, packed) for s in range(0, n, chunk)]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    t0 = time.perf_counter()
    parts, offs = [], [np.zeros(1, np.int64)]
    try:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="img", desc=f"emulate {split}", disable=not progress)
    except ImportError:  # pragma: no cover
        bar = None
    base = 0
    if workers == 1:
        results = map(_work, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))
        results = pool.map(_work, jobs)
    try:
        for (ev, off), job in zip(results, jobs):
            parts.append(ev)
            offs.append(off[1:] + base)
            base += int(off[-1])
            if bar is not None:
                bar.update(job[0].shape[0])
    finally:
        if pool is not None:
            pool.shutdown()
        if bar is not None:
            bar.close()
    events = np.concatenate(parts) if parts else np.zeros(0, np.uint32 if packed else EVENT_DTYPE)
    offsets = np.concatenate(offs)
    elapsed = time.perf_counter() - t0
    np.save(out / f"{split}_events.npy", events)
    np.save(out / f"{split}_offsets.npy", offsets)
    np.save(out / f"{split}_labels.npy", labels)
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({"config": dataclasses.asdict(cfg), "key": cfg.key(), "packed_uint32": packed})
    meta.setdefault("splits", {})[split] = {
        "n_samples": int(n),
        "n_events": int(offsets[-1]),
        "mean_events_per_sample": float(offsets[-1] / max(n, 1)),
        "seconds": round(elapsed, 2),
        "workers": workers,
        "images_sha256_16": images_digest(images),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return out


def cache_complete(out_dir, split: str) -> bool:
    out = Path(out_dir)
    return (
        all((out / f"{split}_{k}.npy").is_file() for k in ("events", "offsets", "labels"))
        and (out / "meta.json").is_file()
    )


class EmulatedEvents(Dataset):
    """A split of an emulated-event cache (see module doc): ``(events, label)`` per sample, or
    ``(transform(events), label)``. Events are memory-mapped, so opening is instant."""

    def __init__(self, cache_dir, split: str = "train", transform: Callable | None = None):
        self.dir = Path(cache_dir)
        if not cache_complete(self.dir, split):
            raise EventFileError(
                self.dir,
                f"no complete emulated '{split}' split here (expected {split}_events.npy, "
                f"{split}_offsets.npy, {split}_labels.npy and meta.json; make them with "
                "'spquant data emulate mnist --root DIR')",
            )
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.config = EmulatorConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in self.meta["config"].items()}
        )
        self.sensor_size = tuple(self.config.sensor_size)
        self.events = np.load(self.dir / f"{split}_events.npy", mmap_mode="r")
        self.offsets = np.load(self.dir / f"{split}_offsets.npy")
        self.labels = np.load(self.dir / f"{split}_labels.npy")
        self.packed = bool(self.meta.get("packed_uint32"))
        self.transform = transform

    def __len__(self) -> int:
        return self.labels.shape[0]

    def events_of(self, i: int) -> np.ndarray:
        raw = self.events[self.offsets[i] : self.offsets[i + 1]]
        return unpack_events(raw) if self.packed else np.array(raw)

    def all_events(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Events of samples ``start..stop`` concatenated, and their offsets (starting at 0)."""
        stop = len(self) if stop is None else stop
        a, b = self.offsets[start], self.offsets[stop]
        raw = self.events[a:b]
        ev = unpack_events(raw) if self.packed else np.array(raw)
        return ev, self.offsets[start : stop + 1] - a

    def __getitem__(self, i: int):
        ev = self.events_of(i)
        return (self.transform(ev) if self.transform else ev), int(self.labels[i])


def default_cache_dir() -> Path:
    """``$SPQUANT_CACHE`` or ``~/.cache/spquant``."""
    return Path(os.environ.get("SPQUANT_CACHE", Path.home() / ".cache" / "spquant"))


def EmulatedMNIST(
    split: str = "train",
    source="embedded",
    config: EmulatorConfig | None = None,
    cache_dir=None,
    transform: Callable | None = None,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> EmulatedEvents:
    """Emulated N-MNIST-like events of MNIST digits, emulated on first use and cached on disk.

    ``source``: 'embedded' (the packaged 7,000-image subset), 'full' (full MNIST from
    :func:`spquant.data.fetch.default_root` / 'mnist') or a folder with the four MNIST IDX files.
    The cache folder is ``cache_dir / 'emulated_mnist' / f'{source_tag}-{config.key()}'`` (plus
    ``-first{limit}`` when only the first ``limit`` images are wanted).
    """
    cfg = config or EmulatorConfig()
    images, labels, _ = _mnist_source(split, source)
    out = emulated_mnist_dir(source, cfg, cache_dir)
    if limit is not None and limit < len(labels):
        images, labels = images[:limit], labels[:limit]
        out = out.with_name(out.name + f"-first{limit}")
    if not cache_complete(out, split) or _stale(out, split, images):
        emulate_to_cache(images, labels, out, split, cfg, workers=workers, progress=progress)
    return EmulatedEvents(out, split, transform)


def source_tag(source) -> str:
    """'embedded', 'full', or 'dir-<hash of the resolved folder path>'."""
    if source in ("embedded", "full"):
        return str(source)
    return "dir-" + hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]


def emulated_mnist_dir(source="embedded", config: EmulatorConfig | None = None, cache_dir=None) -> Path:
    """Cache folder of emulated MNIST for a source and configuration (shared by :func:`EmulatedMNIST`
    and ``spquant data emulate``): ``cache_dir / 'emulated_mnist' / f'{source_tag}-{config.key()}'``."""
    cfg = config or EmulatorConfig()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "emulated_mnist" / f"{source_tag(source)}-{cfg.key()}"


def _stale(out: Path, split: str, images: np.ndarray) -> bool:
    meta = json.loads((out / "meta.json").read_text())
    return meta.get("splits", {}).get(split, {}).get("images_sha256_16") != images_digest(images)


def _mnist_source(split: str, source) -> tuple[np.ndarray, np.ndarray, str]:
    from spquant.data.embedded import load_embedded_mnist
    from spquant.data.idx import load_idx_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source == "embedded":
        xtr, ytr, xte, yte = load_embedded_mnist()
        return (xtr, ytr, "embedded") if split == "train" else (xte, yte, "embedded")
    if source == "full":
        from spquant.data.fetch import default_root

        root = default_root() / "mnist"
        x, y = load_idx_split(root, split)
        return x, y, "full"
    x, y = load_idx_split(source, split)
    return x, y, source_tag(source)
