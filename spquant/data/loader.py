"""Training-ready tensors: encode once into memory, then iterate ``[T, B, C, H, W]`` batches.

DataLoader worker processes slow training down on small CPUs, so :class:`FrameCache` keeps
the whole (encoded) split in one compact tensor (uint8 where exact, float16 otherwise) and cuts
float32 batches from it in the main process, shuffled by a seeded ``torch.Generator``.

>>> x, y = mnist_frames("test", T=4, source="embedded", encoding="direct")
>>> x.shape, x.dtype, y.shape
(torch.Size([1000, 1, 28, 28]), torch.uint8, torch.Size([1000]))
>>> xb, yb = next(iter(FrameCache(x, y, batch_size=32, T=4)))
>>> xb.shape, xb.dtype
(torch.Size([4, 32, 1, 28, 28]), torch.float32)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from spquant.data.emulator import EmulatorConfig
from spquant.data.transforms import resize, to_frames_batch


class FrameCache:
    """Iterate float32 batches ``(x [T, B, C, H, W], y [B] int64)`` from an in-memory tensor.

    ``data``: either frames ``[N, T, C, H, W]`` or static images ``[N, C, H, W]`` (direct encoding:
    repeated ``T`` times per batch, ``T`` required). uint8 data is multiplied by ``scale`` (default:
    1/255 for static uint8 images, 1 for frames). ``shuffle`` draws a new permutation every epoch
    from one generator seeded with ``seed``; ``drop_last`` drops a final partial batch.
    ``size`` = (H, W) resizes every batch on the fly (area interpolation), so a large split can stay
    compact (uint8 at the sensor size) in memory.
    """

    def __init__(self, data: torch.Tensor, labels, batch_size: int = 64, T: int | None = None,
                 shuffle: bool = True, seed: int = 0, scale: float | None = None, drop_last: bool = False,
                 size: Sequence[int] | None = None):
        self.data = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
        self.labels = torch.as_tensor(np.asarray(labels)).to(torch.int64)
        if self.data.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.data.shape[0]} samples but {self.labels.shape[0]} labels")
        self.static = self.data.ndim == 4
        if self.data.ndim not in (4, 5):
            raise ValueError(f"data must be [N, T, C, H, W] frames or [N, C, H, W] images, got {tuple(self.data.shape)}")
        if self.static and T is None:
            raise ValueError("static images need T (the number of time steps to repeat them)")
        if not self.static and T is not None and T != self.data.shape[1]:
            raise ValueError(f"frames have T={self.data.shape[1]}, asked for T={T}")
        self.T = T if self.static else self.data.shape[1]
        if scale is None:
            scale = 1 / 255 if (self.static and self.data.dtype == torch.uint8) else 1.0
        self.scale, self.batch_size, self.shuffle, self.drop_last = scale, batch_size, shuffle, drop_last
        self.size = None if size is None else tuple(size)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.labels.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.data[idx].to(torch.float32)
            if self.scale != 1.0:
                x.mul_(self.scale)
            if self.size is not None:
                x = resize(x, self.size)
            if self.static:
                x = x.unsqueeze(0).expand(self.T, *x.shape)
            else:
                x = x.transpose(0, 1)
            yield x.contiguous(), self.labels[idx]


def _images(split: str, source) -> tuple[np.ndarray, np.ndarray]:
    from spquant.data.emulated import _mnist_source
    x, y, _ = _mnist_source(split, source)
    return x, y


def mnist_frames(split: str = "train", T: int = 10, source="embedded", encoding: str = "direct",
                 mode: str = "polarity3", size: Sequence[int] | None = None, config: EmulatorConfig | None = None,
                 cache_dir=None, limit: int | None = None, workers: int | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ready to batch with :class:`FrameCache`: returns ``(data, labels int64 [N])``.

    ``source``: 'embedded' (packaged 6,000/1,000 real subset), 'full' (full MNIST in
    ``default_root()/mnist``, see ``spquant data fetch mnist``) or a folder with the IDX files.
    ``encoding``:

    * ``'direct'`` — static images, uint8 ``[N, 1, 28, 28]`` (or float16 ``[N, 1, *size]`` when
      resized); FrameCache repeats them T times.
    * ``'events'`` — emulated N-MNIST-like events (:func:`~spquant.data.emulated.EmulatedMNIST`,
      cached on disk, emulated on first use), binned into ``T`` frames (also cached, as
      ``{split}_frames_T{T}_{mode}.npy`` next to the events) of ``mode`` ('polarity3'
      3 channels or 'count2' 2 channels) on the 34x34 sensor: uint8 ``[N, T, C, 34, 34]``, or float16
      ``[N, T, C, *size]`` when ``size`` is given (area resize).

    ``limit`` keeps the first ``limit`` samples (and emulates only those).
    """
    if encoding == "direct":
        x, y = _images(split, source)
        if limit is not None:
            x, y = x[:limit], y[:limit]
        data = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
        if size is not None:
            data = resize(data.to(torch.float32) / 255.0, size).to(torch.float16)
        return data, torch.from_numpy(y.astype(np.int64))
    if encoding != "events":
        raise ValueError(f"encoding must be 'direct' or 'events', got {encoding!r}")
    from spquant.data.emulated import EmulatedMNIST
    ds = EmulatedMNIST(split, source, config=config, cache_dir=cache_dir, workers=workers, progress=progress,
                       limit=limit)
    n = len(ds) if limit is None else min(limit, len(ds))
    c = 3 if mode == "polarity3" else 2
    w, h = ds.sensor_size
    frames_file = ds.dir / f"{split}_frames_T{T}_{mode}.npy"  # uint8 frames are cached next to the events
    if frames_file.is_file():
        cached = np.load(frames_file, mmap_mode="r")
        if cached.shape[0] >= n:
            data = torch.from_numpy(np.array(cached[:n]))  # a writable in-memory copy
            if size is not None:
                data = torch.cat([resize(data[s:s + 2000].to(torch.float32), size).to(torch.float16)
                                  for s in range(0, n, 2000)]) if n else data.to(torch.float16)
            return data, torch.from_numpy(ds.labels[:n].astype(np.int64))
    frames = np.zeros((n, T, c, h, w), np.uint8)
    step = 2000
    for s in range(0, n, step):  # bounded memory: decode and bin 2,000 samples at a time
        ev, off = ds.all_events(s, min(n, s + step))
        frames[s:s + len(off) - 1] = to_frames_batch(ev, off, ds.sensor_size, T, mode)
    if n == len(ds):
        tmp = frames_file.with_name(frames_file.name + ".tmp.npy")
        np.save(tmp, frames)
        tmp.replace(frames_file)
    data = torch.from_numpy(frames)
    if size is not None:
        data = torch.cat([resize(data[s:s + step].to(torch.float32), size).to(torch.float16)
                          for s in range(0, n, step)]) if n else data.to(torch.float16)
    return data, torch.from_numpy(ds.labels[:n].astype(np.int64))
