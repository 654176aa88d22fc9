"""Transforms: events -> frames, frame resizing / augmentation, direct encoding of static images.

Each transform is a frozen dataclass whose ``__call__`` delegates to a pure function of the same
name in snake case (tonic style), so both can be used:

>>> import numpy as np
>>> from spquant.data.events import make_events
>>> ev = make_events(x=[0, 1, 1], y=[0, 0, 0], t=[0, 5, 9], p=[1, 1, 0])
>>> to_frames(ev, (2, 1), n_time_bins=2, mode="count2")[:, :, 0, :].tolist()
[[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]
>>> ToFrames(n_time_bins=2, sensor_size=(2, 1, 2), mode="polarity3")(ev).shape
torch.Size([2, 3, 1, 2])

Frame layout everywhere: ``[T, C, H, W]`` (a leading batch dimension is allowed where noted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


# ------------------------------------------------------------------ events -> frames
def time_bin_index(t: np.ndarray, n_time_bins: int, t_start: int | None = None,
                   t_end: int | None = None) -> np.ndarray:
    """Equal time bins: bin of every timestamp over ``[t_start, t_end]`` (default: first..last event).

    The span ``t_end - t_start + 1`` microseconds is split into ``n_time_bins`` equal parts;
    ``bin = floor((t - t_start) * T / span)``. Events outside the span get -1.
    """
    t = np.asarray(t, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, np.int64)
    t0 = int(t[0] if t_start is None else t_start)
    t1 = int(t[-1] if t_end is None else t_end)
    span = max(t1 - t0 + 1, 1)
    b = ((t - t0) * n_time_bins) // span
    b[(t < t0) | (t > t1)] = -1
    return b


def to_frames(events: np.ndarray, sensor_size: Sequence[int], n_time_bins: int, mode: str = "polarity3",
              t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
    """Turn events into float32 frames ``[T, C, H, W]`` by equal time bins.

    ``sensor_size``: (W, H) or (W, H, n_polarities). ``mode``:

    * ``'polarity3'`` — the SpQuant-SNN authors' colouring, 3 channels (RGB): a pixel with an ON
      event in the bin is red (channel 0 = 1), with an OFF event green (channel 1 = 1); when a pixel
      has several events in the bin, only the latest one's colour shows. Channel 2 (blue) stays 0.
    * ``'count2'`` — 2-channel count histogram: channel ``p`` counts the events of polarity ``p``
      (channel 0 = OFF, channel 1 = ON, tonic's convention).
    """
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if mode not in ("polarity3", "count2"):
        raise ValueError(f"mode must be 'polarity3' or 'count2', got {mode!r}")
    c = 3 if mode == "polarity3" else 2
    frames = np.zeros((n_time_bins, c, h, w), np.float32)
    if events.size == 0:
        return frames
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if x.max() >= w or y.max() >= h:
        raise ValueError(f"event coordinates (max x {x.max()}, max y {y.max()}) outside the sensor {w}x{h}")
    b = time_bin_index(events["t"], n_time_bins, t_start, t_end)
    keep = b >= 0
    x, y, b, p = x[keep], y[keep], b[keep], events["p"][keep].astype(np.int64)
    if mode == "count2":
        np.add.at(frames.reshape(-1), ((b * 2 + p) * h + y) * w + x, 1.0)
        return frames
    cell = (b * h + y) * w + x  # events are sorted by t: the last occurrence of a cell wins
    rev = cell[::-1]
    uniq, first_in_rev = np.unique(rev, return_index=True)
    last_p = p[::-1][first_in_rev]
    bb, rest = np.divmod(uniq, h * w)
    ch = np.where(last_p == 1, 0, 1)
    frames.reshape(n_time_bins, c, h * w)[bb, ch, rest] = 1.0
    return frames


def to_frames_batch(events: np.ndarray, offsets: np.ndarray, sensor_size: Sequence[int], n_time_bins: int,
                    mode: str = "polarity3", dtype=np.uint8) -> np.ndarray:
    """Frames of many samples at once: ``[N, T, C, H, W]`` (``dtype``, uint8 by default: exact for
    'polarity3' and for counts up to 255, which saturate).

    Sample i is ``events[offsets[i]:offsets[i + 1]]``; each sample is binned over its own first..last
    event exactly like :func:`to_frames`, whose result equals ``to_frames_batch(...)[i]``.
    """
    w, h = int(sensor_size[0]), int(sensor_size[1])
    c = 3 if mode == "polarity3" else 2
    if mode not in ("polarity3", "count2"):
        raise ValueError(f"mode must be 'polarity3' or 'count2', got {mode!r}")
    offsets = np.asarray(offsets, np.int64)
    n = offsets.size - 1
    out = np.zeros((n, n_time_bins, c, h, w), dtype)
    counts = np.diff(offsets)
    if events.size == 0 or counts.sum() == 0:
        return out
    ev = events[offsets[0]:offsets[-1]]
    sample = np.repeat(np.arange(n), counts)
    nz = counts > 0
    first = np.zeros(n, np.int64)
    last = np.zeros(n, np.int64)
    first[nz] = events["t"][offsets[:-1][nz]]
    last[nz] = events["t"][offsets[1:][nz] - 1]
    t = ev["t"].astype(np.int64) - first[sample]
    span = np.maximum(last - first + 1, 1)[sample]
    b = (t * n_time_bins) // span
    x, y, p = ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["p"].astype(np.int64)
    if x.max() >= w or y.max() >= h:
        raise ValueError(f"event coordinates (max x {x.max()}, max y {y.max()}) outside the sensor {w}x{h}")
    flat = out.reshape(-1)
    if mode == "count2":
        idx = (((sample * n_time_bins + b) * 2 + p) * h + y) * w + x
        cnt = np.bincount(idx, minlength=flat.size)
        flat[:] = np.minimum(cnt, np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else cnt.max())
        return out
    cell = ((sample * n_time_bins + b) * h + y) * w + x
    last_idx = torch.full((n * n_time_bins * h * w,), -1, dtype=torch.int64)
    last_idx.scatter_reduce_(0, torch.from_numpy(cell), torch.arange(cell.size), reduce="amax")
    li = last_idx.numpy()
    cells = np.flatnonzero(li >= 0)
    ch = np.where(p[li[cells]] == 1, 0, 1)
    sb, rest = np.divmod(cells, h * w)
    flat[(sb * c + ch) * h * w + rest] = 1
    return out


@dataclass(frozen=True)
class ToFrames:
    """Events -> float32 tensor ``[T, C, H, W]`` (see :func:`to_frames`); ``sensor_size`` = (W, H[, 2])."""

    n_time_bins: int
    sensor_size: tuple[int, ...]
    mode: str = "polarity3"

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_frames(events, self.sensor_size, self.n_time_bins, self.mode))


# ------------------------------------------------------------------ frame transforms
def _as_tensor(frames) -> torch.Tensor:
    return frames if isinstance(frames, torch.Tensor) else torch.as_tensor(np.asarray(frames))


def resize(frames, size: Sequence[int] = (48, 48), mode: str = "area") -> torch.Tensor:
    """Resize frames ``[..., C, H, W]`` to ``size`` = (H, W) with ``torch.nn.functional.interpolate``.

    ``mode='area'`` (default) averages the source pixels covering each target pixel (right for
    shrinking sparse event frames: an event pixel becomes a fraction, nothing is dropped);
    ``'bilinear'`` (align_corners=False, antialias when shrinking) suits enlarging; ``'nearest'``
    keeps binary values binary.
    """
    x = _as_tensor(frames)
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:]).to(torch.float32)
    kw: dict[str, Any] = {}
    if mode == "bilinear":
        kw = {"align_corners": False, "antialias": tuple(size) < tuple(x4.shape[-2:])}
    out = F.interpolate(x4, size=tuple(size), mode=mode, **kw)
    return out.reshape(*lead, *out.shape[-3:])


@dataclass(frozen=True)
class Resize:
    """Resize frames to ``size`` = (H, W) (default 48x48, the paper's input size); see :func:`resize`."""

    size: tuple[int, int] = (48, 48)
    mode: str = "area"

    def __call__(self, frames) -> torch.Tensor:
        return resize(frames, self.size, self.mode)


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else seed)


def random_crop(frames, size: Sequence[int], padding: int = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop frames ``[..., C, H, W]`` to ``size`` = (h, w) at a random offset (same for all time steps),
    after zero-padding ``padding`` pixels on every side."""
    x = _as_tensor(frames)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    h, w = x.shape[-2:]
    ch, cw = int(size[0]), int(size[1])
    if ch > h or cw > w:
        raise ValueError(f"crop {ch}x{cw} larger than the (padded) frame {h}x{w}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    i = int(torch.randint(0, h - ch + 1, (1,), generator=g))
    j = int(torch.randint(0, w - cw + 1, (1,), generator=g))
    return x[..., i:i + ch, j:j + cw]


def random_flip(frames, p: float = 0.5, horizontal: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip frames ``[..., C, H, W]`` left-right (``horizontal``) or up-down with probability ``p``."""
    x = _as_tensor(frames)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if float(torch.rand((), generator=g)) < p:
        return torch.flip(x, dims=(-1,) if horizontal else (-2,))
    return x


class _Seeded:
    """Mixin: a frozen dataclass holding ``seed`` / ``generator``, drawing from one lazily made generator."""

    def _gen(self) -> torch.Generator:
        g = self.__dict__.get("_g")
        if g is None:
            g = _generator(self.generator, self.seed)
            object.__setattr__(self, "_g", g)
        return g


@dataclass(frozen=True)
class RandomCrop(_Seeded):
    """Random crop (see :func:`random_crop`); randomness from ``generator`` or a new one seeded with ``seed``."""

    size: tuple[int, int]
    padding: int = 0
    seed: int | None = 0
    generator: torch.Generator | None = None

    def __call__(self, frames) -> torch.Tensor:
        return random_crop(frames, self.size, self.padding, self._gen())


@dataclass(frozen=True)
class RandomFlip(_Seeded):
    """Random flip (see :func:`random_flip`); randomness from ``generator`` or ``seed``."""

    p: float = 0.5
    horizontal: bool = True
    seed: int | None = 0
    generator: torch.Generator | None = None

    def __call__(self, frames) -> torch.Tensor:
        return random_flip(frames, self.p, self.horizontal, self._gen())


# ------------------------------------------------------------------ static images
def direct_encode(image, n_time_bins: int, scale: float | None = None) -> torch.Tensor:
    """Repeat a static image ``n_time_bins`` times: ``[H, W]`` or ``[C, H, W]`` -> ``[T, C, H, W]``
    float32 (uint8 images are scaled by 1/255 unless ``scale`` is given).

    >>> direct_encode(np.full((2, 2), 255, np.uint8), 3).shape
    torch.Size([3, 1, 2, 2])
    """
    x = _as_tensor(image)
    if scale is None:
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    x = x.to(torch.float32) * scale
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"direct_encode takes [H, W] or [C, H, W], got {tuple(x.shape)}")
    return x.unsqueeze(0).expand(n_time_bins, *x.shape).contiguous()


@dataclass(frozen=True)
class DirectEncode:
    """Static image -> ``[T, C, H, W]`` by repetition (see :func:`direct_encode`)."""

    n_time_bins: int
    scale: float | None = None

    def __call__(self, image) -> torch.Tensor:
        return direct_encode(image, self.n_time_bins, self.scale)


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order."""

    transforms: tuple[Callable, ...]

    def __post_init__(self):
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x
