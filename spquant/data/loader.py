"""MNIST as training-ready tensors (static images or emulated-event frames), encoded once.

The real event data sets go through the on-disk frame cache of :mod:`spquant.data.prepare` instead.

>>> x, y = mnist_frames("test", T=4, source="embedded", encoding="direct")
>>> x.shape, x.dtype, y.shape
(torch.Size([1000, 1, 28, 28]), torch.uint8, torch.Size([1000]))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spquant.data.emulator import EmulatorConfig
from spquant.data.transforms import resize, to_frames_batch


def _images(split: str, source) -> tuple[np.ndarray, np.ndarray]:
    from spquant.data.emulated import _mnist_source

    x, y, _ = _mnist_source(split, source)
    return x, y


def mnist_frames(
    split: str = "train",
    T: int = 10,
    source="embedded",
    encoding: str = "direct",
    mode: str = "polarity3",
    size: Sequence[int] | None = None,
    config: EmulatorConfig | None = None,
    cache_dir=None,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as compact tensors: returns ``(data, labels int64 [N])``.

    ``source``: 'embedded' (packaged 6,000/1,000 real subset), 'full' (full MNIST in
    ``default_root()/mnist``, see ``spquant data fetch mnist``) or a folder with the IDX files.
    ``encoding``:

    * ``'direct'`` — static images, uint8 ``[N, 1, 28, 28]`` (or float16 ``[N, 1, *size]`` when
      resized), to be repeated T times per batch.
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

    ds = EmulatedMNIST(
        split, source, config=config, cache_dir=cache_dir, workers=workers, progress=progress, limit=limit
    )
    n = len(ds) if limit is None else min(limit, len(ds))
    c = 3 if mode == "polarity3" else 2
    w, h = ds.sensor_size
    frames_file = ds.dir / f"{split}_frames_T{T}_{mode}.npy"  # uint8 frames are cached next to the events
    if frames_file.is_file():
        cached = np.load(frames_file, mmap_mode="r")
        if cached.shape[0] >= n:
            data = torch.from_numpy(np.array(cached[:n]))  # a writable in-memory copy
            if size is not None:
                data = (
                    torch.cat(
                        [
                            resize(data[s : s + 2000].to(torch.float32), size).to(torch.float16)
                            for s in range(0, n, 2000)
                        ]
                    )
                    if n
                    else data.to(torch.float16)
                )
            return data, torch.from_numpy(ds.labels[:n].astype(np.int64))
    frames = np.zeros((n, T, c, h, w), np.uint8)
    step = 2000
    for s in range(0, n, step):  # bounded memory: decode and bin 2,000 samples at a time
        ev, off = ds.all_events(s, min(n, s + step))
        frames[s : s + len(off) - 1] = to_frames_batch(ev, off, ds.sensor_size, T, mode)
    if n == len(ds):
        tmp = frames_file.with_name(frames_file.name + ".tmp.npy")
        np.save(tmp, frames)
        tmp.replace(frames_file)
    data = torch.from_numpy(frames)
    if size is not None:
        data = (
            torch.cat(
                [
                    resize(data[s : s + step].to(torch.float32), size).to(torch.float16)
                    for s in range(0, n, step)
                ]
            )
            if n
            else data.to(torch.float16)
        )
    return data, torch.from_numpy(ds.labels[:n].astype(np.int64))
