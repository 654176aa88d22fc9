"""In-memory training data: every split is one tensor, batches are built by indexing.

On small CPUs DataLoader worker processes slowed training down, so spquant encodes the data once
(frames are cached by :mod:`spquant.data` where it supports it), keeps it in memory and builds each
batch with one gather. The interface is small on purpose::

    data = load_split(config, "train")          # TensorData(inputs, labels, static)
    x, y = data.batch(indices, T)                # x: [T, B, C, H, W] float32, y: [B] int64

``inputs`` is either static images ``[N, C, H, W]`` (direct encoding: repeated T times per batch)
or frames ``[N, T, C, H, W]`` (event data), stored compactly (uint8 or float16) and converted per
batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TensorData", "DatasetData", "load_split", "synthetic_split", "integer_inputs"]


@dataclass
class TensorData:
    inputs: torch.Tensor  # [N, C, H, W] (static) or [N, T, C, H, W] (frames)
    labels: torch.Tensor  # [N] int64
    static: bool
    scale: float = 1.0  # multiply after the float conversion (1/255 for uint8 images)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(
        self, idx: torch.Tensor, T: int, augment: str = "none", generator: torch.Generator | None = None
    ):
        """Inputs ``[T, B, C, H, W]`` float32 and labels ``[B]`` of the samples ``idx``."""
        x = self.inputs[idx].float()
        if self.scale != 1.0:
            x = x * self.scale
        if augment != "none":
            x = _augment(x, augment, generator, static=self.static)
        y = self.labels[idx]
        if self.static:
            return x.unsqueeze(0).expand(T, *x.shape).contiguous(), y
        if x.shape[1] != T:
            raise ValueError(f"frames have T={x.shape[1]} but the model is configured with T={T}")
        return x.transpose(0, 1).contiguous(), y


def _augment(x: torch.Tensor, how: str, g: torch.Generator | None, static: bool, **kw) -> torch.Tensor:
    """``data.augment`` per sample (:func:`spquant.data.transforms.augment_batch`: shift, crop, flip,
    roll, nda and their '+' combinations; ``kw``: roll_px, crop_pad)."""
    from spquant.data.transforms import augment_batch

    return augment_batch(x, how, g, **kw)


class DatasetData:
    """A map-style data set (``ds[i] -> (inputs, target)``) with the :class:`TensorData` interface:
    ``batch(idx, T)`` gathers the samples and collates them (detection: frames ``[T, B, C, H, W]``
    and a list of ``[n, 5]`` box tensors)."""

    static = False

    def __init__(self, dataset, collate, augmentable: bool = False, augment_kw: dict | None = None):
        self.dataset, self.collate, self.augmentable = dataset, collate, augmentable
        self.augment_kw = augment_kw or {}

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(
        self, idx: torch.Tensor, T: int, augment: str = "none", generator: torch.Generator | None = None
    ):
        return self.finish(*self.collate([self.dataset[int(i)] for i in idx]), T, augment, generator)

    def batches(self, index_lists, workers: int = 0):
        """The collated ``(inputs, target)`` of each index list, in order; ``workers`` > 0 reads them in
        DataLoader worker processes (the same samples in the same order: the run stays exact)."""
        if workers <= 0:
            for idx in index_lists:
                yield self.collate([self.dataset[int(i)] for i in idx])
            return
        from torch.utils.data import DataLoader

        sampler = [[int(i) for i in idx] for idx in index_lists]
        yield from DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=workers, collate_fn=self.collate
        )

    def finish(self, x, target, T: int, augment: str = "none", generator: torch.Generator | None = None):
        """A collated batch as the model takes it: float inputs ``[T, B, ...]``, augmented in the main
        process with the loop's generator."""
        if augment != "none" and not self.augmentable:
            raise ValueError(f"data.augment={augment!r} is not supported for this data set")
        if x.shape[0] != T:
            raise ValueError(f"frames have T={x.shape[0]} but the model is configured with T={T}")
        x = x.float()
        if augment != "none":  # per sample: [T, B, ...] -> [B, T, ...] and back
            x = _augment(x.transpose(0, 1), augment, generator, static=False, **self.augment_kw)
            x = x.transpose(0, 1).contiguous()
        return x, target


def _root(d) -> Path:
    from spquant.data.roots import data_root

    return data_root(d.dataset, d.root)


def _cache_dir(d) -> str | None:
    return str(Path(os.path.expanduser(d.cache))) if d.cache else None


def _fit(images: torch.Tensor, size: tuple[int, int], how: str) -> torch.Tensor:
    """[N, ..., h, w] -> [N, ..., H, W] by zero-padding (centred), centre-cropping or bilinear resizing.

    'pad' and 'crop' keep integer data (pixels, event counts) exactly."""
    h, w = images.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return images
    if how == "pad":
        if H < h or W < w:
            raise ValueError(f"cannot pad {h}x{w} images to a smaller {H}x{W}; use data.resize='resize'")
        top, left = (H - h) // 2, (W - w) // 2
        return F.pad(images, (left, W - w - left, top, H - h - top))
    if how == "crop":
        if H > h or W > w:
            raise ValueError(f"cannot crop {h}x{w} inputs to a larger {H}x{W}; use data.resize='pad'")
        top, left = (h - H) // 2, (w - W) // 2
        return images[..., top : top + H, left : left + W].contiguous()
    dtype = images.dtype
    out = F.interpolate(images.float(), size=(H, W), mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else out.to(dtype)


def _subset(x, y, n: int, seed: int):
    """A class-agnostic random subset of n samples (deterministic in seed); n = 0 keeps all."""
    if not n or n >= len(y):
        return x, y
    g = torch.Generator().manual_seed(seed + 12345)
    idx = torch.randperm(len(y), generator=g)[:n].sort().values
    return x[idx], y[idx]


def _mnist_arrays(data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    if data_cfg.source == "embedded":
        from spquant.data.embedded import load_embedded_mnist

        xtr, ytr, xte, yte = load_embedded_mnist()
        return (xtr, ytr) if split == "train" else (xte, yte)
    from spquant.data.idx import load_idx_split

    if data_cfg.source != "full":
        raise ValueError(
            f"data.source must be 'embedded' or 'full', got {data_cfg.source!r} (the folder goes in data.root)"
        )
    return load_idx_split(_root(data_cfg), split)


def synthetic_split(
    n: int, classes: int, shape: tuple[int, int, int], seed: int, split: str, T: int | None = None
) -> TensorData:
    """Learnable random data: one fixed template per class plus noise (templates fixed by ``seed``).

    With ``T`` given the samples are frames ``[N, T, C, H, W]`` (Bernoulli spikes), else images."""
    gt = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, *shape, generator=gt)
    g = torch.Generator().manual_seed(seed * 7919 + (1 if split == "train" else 2))
    y = torch.randint(0, classes, (n,), generator=g)
    x = (0.6 * templates[y] + 0.4 * torch.rand(n, *shape, generator=g)).clamp(0, 1)
    if T is None:
        return TensorData((x * 255).round().to(torch.uint8), y, static=True, scale=1 / 255)
    frames = (torch.rand(n, T, *shape, generator=g) < x.unsqueeze(1)).to(torch.uint8)
    return TensorData(frames, y, static=False)


def integer_inputs(config) -> bool:
    """Whether the run's event frames stay integer counts after fitting them to ``model.input``
    (what an exact integer export needs): area resizing makes fractions."""
    d = config.data
    if d.encoding == "direct" or d.dataset in ("synthetic", "moving-digits", "gen1", "1mpx"):
        return True
    from spquant.data.prepare import EVENT_DATASETS, frames_are_integer

    if d.dataset in EVENT_DATASETS:  # the frame cache knows (integer shrinks are sum-pooled)
        return frames_are_integer(config)
    return d.resize != "resize"


def load_split(config, split: str, progress: bool | None = None) -> TensorData | DatasetData:
    """The ``split`` ('train' or 'test') of ``config.data``, fitted to ``config.model``; ``progress``
    (None = ``run.progress``) shows the bar of a frame cache being made."""
    d, m = config.data, config.model
    if d.dataset in ("moving-digits", "gen1", "1mpx"):
        return _detection_split(config, split)
    n_limit = d.train_subset if split == "train" else d.test_subset
    size = tuple(m.input)
    if d.dataset == "synthetic":
        n = n_limit or (512 if split == "train" else 256)
        shape = (m.in_channels, *size)
        return synthetic_split(
            n, m.classes, shape, config.train.seed, split, T=m.T if d.encoding == "events" else None
        )
    if d.dataset == "mnist":
        if d.encoding != "direct":
            raise ValueError("dataset 'mnist' uses encoding='direct'; use dataset='mnist-dvs' for events")
        x, y = _mnist_arrays(d, split)
        x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
        x, y = _subset(x, y, n_limit, config.train.seed)
        x = _fit(x.unsqueeze(1), size, d.resize)
        if m.in_channels != 1:
            x = x.expand(-1, m.in_channels, -1, -1).contiguous()
        return TensorData(x, y, static=True, scale=1 / 255)
    if d.dataset == "mnist-dvs":
        return _mnist_dvs(config, split, n_limit)
    if d.dataset == "cifar10":  # static images, small enough to hold (uint8 codes, like MNIST)
        from spquant.data.datasets import CIFAR10

        ds = CIFAR10(_root(d), split)
        x, y = torch.from_numpy(ds.images), torch.from_numpy(ds.labels)
        x, y = _subset(x, y, n_limit, config.train.seed)
        return TensorData(_fit(x, size, d.resize), y, static=True, scale=1 / 255)
    from spquant.data.prepare import EVENT_DATASETS

    if d.dataset in EVENT_DATASETS:
        # the on-disk frame cache (made on first use, or by 'spquant data prepare'), read sample by
        # sample from its memory map; augmentation happens per batch with the loop's generator
        from spquant.data.prepare import collate_frames, load_frames

        return DatasetData(
            load_frames(config, split, progress, augment=False),
            collate_frames,
            augmentable=True,
            augment_kw={"roll_px": d.roll_px, "crop_pad": d.crop_pad},
        )
    raise NotImplementedError(
        f"dataset {d.dataset!r}: its readers are in spquant.data but the in-memory training adapter is not "
        "wired yet; the paper recipes parse and build their models (see docs/training.md)"
    )


def _mnist_dvs(config, split: str, n_limit: int) -> TensorData:
    """Event frames of MNIST made by the event-camera emulator of :mod:`spquant.data` (N-MNIST-like
    saccades on a 34x34 sensor, cached on disk after the first use), binned into T frames:
    2-channel ON/OFF counts (model.in_channels = 2) or the 3-channel colour encoding (3), area-resized
    to model.input unless that is 34x34 (or centre-cropped to it with data.resize='crop', which keeps
    the frames integer counts, as the integer interpreter needs)."""
    from spquant.data.loader import mnist_frames

    d, m = config.data, config.model
    if m.in_channels not in (2, 3):
        raise ValueError(
            f"mnist-dvs frames have 2 (count) or 3 (polarity colour) channels; model.in_channels is {m.in_channels}"
        )
    if d.source not in ("embedded", "full"):
        raise ValueError(
            f"data.source must be 'embedded' or 'full', got {d.source!r} (the folder goes in data.root)"
        )
    source = "embedded" if d.source == "embedded" else str(_root(d))
    size = (
        tuple(m.input) if d.resize == "resize" and tuple(m.input) != (34, 34) else None
    )  # area resize in the loader
    frames, labels = mnist_frames(
        split,
        T=m.T,
        source=source,
        encoding="events",
        mode="count2" if m.in_channels == 2 else "polarity3",
        size=size,
        cache_dir=_cache_dir(d),
        progress=config.run.progress,
    )
    frames, labels = _subset(frames, labels.to(torch.int64), n_limit, config.train.seed)
    if size is None:
        frames = _fit(frames, tuple(m.input), d.resize)
    return TensorData(frames, labels, static=False)


def _detection_split(config, split: str) -> DatasetData:
    """Detection data (frames + boxes): moving MNIST digits or Prophesee Gen1. ``data.options`` are the
    data set's own keyword arguments; a wrong one is a config error naming the data set."""
    from spquant.data.detection import Gen1DetectionFrames, MovingDigits, collate_detection
    from spquant.train.config import ConfigError

    d, m = config.data, config.model
    n = d.train_subset if split == "train" else d.test_subset
    opts = dict(d.options)
    try:
        if d.dataset == "moving-digits":
            if not n:
                raise ConfigError(
                    f"data.{split}_subset must give the number of generated moving-digits samples"
                )
            if d.source not in ("embedded", "full"):
                raise ConfigError(f"data.source must be 'embedded' or 'full', got {d.source!r}")
            mnist_root = str(_root(d)) if d.source == "full" else None
            ds = MovingDigits(
                cache_dir=_cache_dir(d) or "default",
                mnist_root=mnist_root,
                num_samples=n,
                split=split,
                T=m.T,
                source="mnist" if d.source == "full" else "embedded",
                **opts,
            )
        else:
            opts.setdefault("benchmark", d.dataset)  # the sensor, classes and box filter of Gen1 or 1 Mpx
            ds = Gen1DetectionFrames(_root(d), split, T=m.T, input_size=tuple(m.input), **opts)
            if n and n < len(ds):
                keep = np.random.default_rng(config.train.seed).choice(len(ds), n, replace=False)
                ds = torch.utils.data.Subset(ds, sorted(keep.tolist()))
    except TypeError as e:  # an unknown data.options key
        raise ConfigError(f"data.options of {d.dataset!r}: {e}") from None
    return DatasetData(ds, collate_detection)
