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
def time_bin_index(
    t: np.ndarray, n_time_bins: int, t_start: int | None = None, t_end: int | None = None
) -> np.ndarray:
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


def count_bin_index(n: int, n_time_bins: int) -> np.ndarray:
    """Equal event-count bins (SpikingJelly's ``split_by='number'``): ``n // T`` events per bin, the
    remainder joins the last bin (with fewer events than bins, event i goes to bin i)."""
    if n == 0:
        return np.zeros(0, np.int64)
    per = n // n_time_bins
    if per == 0:
        return np.arange(n, dtype=np.int64)
    return np.minimum(np.arange(n, dtype=np.int64) // per, n_time_bins - 1)


FRAME_MODES = {"polarity3": 3, "count2": 2}


def to_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_time_bins: int,
    mode: str = "polarity3",
    t_start: int | None = None,
    t_end: int | None = None,
    bins: str = "time",
    dtype=np.float32,
) -> np.ndarray:
    """Turn events into frames ``[T, C, H, W]`` (float32 by default).

    ``sensor_size``: (W, H) or (W, H, n_polarities). ``bins``: ``'time'`` = equal time spans over
    ``[t_start, t_end]`` (default first..last event; :func:`time_bin_index`), ``'count'`` = equal
    event counts (:func:`count_bin_index`). ``mode``:

    * ``'polarity3'`` — the SpQuant-SNN authors' colouring, 3 channels (RGB): a pixel with an ON
      event in the bin is red (channel 0 = 1), with an OFF event green (channel 1 = 1); when a pixel
      has several events in the bin, only the latest one's colour shows. Channel 2 (blue) stays 0.
    * ``'count2'`` — 2-channel count histogram: channel ``p`` counts the events of polarity ``p``
      (channel 0 = OFF, channel 1 = ON, tonic's convention). An integer ``dtype`` saturates counts
      at its maximum (255 for uint8).
    """
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if mode not in FRAME_MODES:
        raise ValueError(f"mode must be 'polarity3' or 'count2', got {mode!r}")
    if bins not in ("time", "count"):
        raise ValueError(f"bins must be 'time' or 'count', got {bins!r}")
    c = FRAME_MODES[mode]
    frames = np.zeros((n_time_bins, c, h, w), dtype)
    if events.size == 0:
        return frames
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if x.max() >= w or y.max() >= h:
        raise ValueError(f"event coordinates (max x {x.max()}, max y {y.max()}) outside the sensor {w}x{h}")
    if bins == "time":
        b = time_bin_index(events["t"], n_time_bins, t_start, t_end)
    else:
        b = count_bin_index(events.size, n_time_bins)
    keep = b >= 0
    x, y, b, p = x[keep], y[keep], b[keep], events["p"][keep].astype(np.int64)
    if mode == "count2":
        cnt = np.bincount(((b * 2 + p) * h + y) * w + x, minlength=frames.size)
        if np.issubdtype(np.dtype(dtype), np.integer):
            cnt = np.minimum(cnt, np.iinfo(dtype).max)
        frames.reshape(-1)[:] = cnt
        return frames
    cell = (b * h + y) * w + x  # events are sorted by t: the latest event of a cell wins
    last = torch.full((n_time_bins * h * w,), -1, dtype=torch.int64)
    last.scatter_reduce_(0, torch.from_numpy(cell), torch.arange(cell.size), reduce="amax")
    li = last.numpy()
    cells = np.flatnonzero(li >= 0)
    bb, rest = np.divmod(cells, h * w)
    ch = np.where(p[li[cells]] == 1, 0, 1)
    frames.reshape(n_time_bins, c, h * w)[bb, ch, rest] = 1
    return frames


def to_frames_batch(
    events: np.ndarray,
    offsets: np.ndarray,
    sensor_size: Sequence[int],
    n_time_bins: int,
    mode: str = "polarity3",
    dtype=np.uint8,
) -> np.ndarray:
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
    ev = events[offsets[0] : offsets[-1]]
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
    bins: str = "time"

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            to_frames(events, self.sensor_size, self.n_time_bins, self.mode, bins=self.bins)
        )


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


def random_crop(
    frames, size: Sequence[int], padding: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
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
    return x[..., i : i + ch, j : j + cw]


def random_flip(
    frames, p: float = 0.5, horizontal: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
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


# ------------------------------------------------------------------ fitting and augmentation
FITS = ("resize", "crop", "pad")


def fit_frames(frames, size: Sequence[int], how: str = "resize") -> torch.Tensor:
    """Bring frames ``[..., C, H, W]`` to ``size`` = (H, W): ``'resize'`` (area interpolation when
    shrinking, bilinear when enlarging: fractional values), ``'crop'`` (centre crop) or ``'pad'``
    (centred zero border). 'crop' and 'pad' keep integer frames integer (and their dtype).

    >>> fit_frames(torch.ones(1, 2, 4, 4, dtype=torch.uint8), (2, 6), "crop").shape
    Traceback (most recent call last):
    ...
    ValueError: cannot crop 4x4 frames to 2x6: the crop is larger in one axis (use 'pad' or 'resize')
    """
    x = _as_tensor(frames)
    h, w = x.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return x
    if how == "pad":
        if H < h or W < w:
            raise ValueError(
                f"cannot pad {h}x{w} frames to {H}x{W}: the target is smaller in one axis "
                "(use 'crop' or 'resize')"
            )
        top, left = (H - h) // 2, (W - w) // 2
        return F.pad(x, (left, W - w - left, top, H - h - top))
    if how == "crop":
        if H > h or W > w:
            raise ValueError(
                f"cannot crop {h}x{w} frames to {H}x{W}: the crop is larger in one axis "
                "(use 'pad' or 'resize')"
            )
        top, left = (h - H) // 2, (w - W) // 2
        return x[..., top : top + H, left : left + W]
    if how != "resize":
        raise ValueError(f"fit must be one of {FITS}, got {how!r}")
    shrink = H <= h and W <= w
    return resize(x, (H, W), "area" if shrink else "bilinear")


AUGMENTS = ("flip", "roll", "crop", "shift", "nda")


def parse_augment(text: str) -> tuple[str, ...]:
    """``'none'`` -> (), ``'flip+roll'`` -> ('flip', 'roll'); ``'crop-flip'`` is ``'crop+flip'``.

    >>> parse_augment("crop-flip"), parse_augment("none")
    (('crop', 'flip'), ())
    """
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    if text == "crop-flip":
        return ("crop", "flip")
    tokens = tuple(t.strip() for t in text.split("+"))
    bad = [t for t in tokens if t not in AUGMENTS]
    if bad:
        raise ValueError(
            f"unknown augmentation {bad[0]!r} in {text!r}; combine with '+' any of {', '.join(AUGMENTS)} "
            "(or 'none')"
        )
    return tokens


def _shift_crop(x: torch.Tensor, pad: int, g: torch.Generator | None) -> torch.Tensor:
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x.reshape(B, -1, H, W), (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=g).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)]).reshape(
        x.shape
    )


def _roll(
    x: torch.Tensor, px: int, g: torch.Generator | None, pick: torch.Tensor | None = None
) -> torch.Tensor:
    B = x.shape[0]
    d = torch.randint(-px, px + 1, (B, 2), generator=g).tolist()
    rows = [
        torch.roll(x[i], shifts=(d[i][0], d[i][1]), dims=(-2, -1)) if pick is None or pick[i] else x[i]
        for i in range(B)
    ]
    return torch.stack(rows)


def _affine_nearest(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``[B, ..., H, W]`` by per-sample 2x3 matrices with nearest sampling (integers stay integers)."""
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    flat = x.reshape(B, -1, H, W)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(
        flat.to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out.to(x.dtype).reshape(x.shape)


def augment_batch(
    x, augment, generator: torch.Generator | None = None, roll_px: int = 5, crop_pad: int = 4
) -> torch.Tensor:
    """Random augmentation of a batch ``[B, ..., H, W]`` (frames ``[B, T, C, H, W]`` or images
    ``[B, C, H, W]``), drawn per sample and the same for every time step of a sample.

    ``augment``: a string for :func:`parse_augment` or a tuple of tokens, applied in this order:

    * ``'shift'`` — zero-pad 2 px and crop back at a random offset (a shift of up to 2 px);
    * ``'crop'`` — the same with ``crop_pad`` px (4: the usual CIFAR-10 augmentation);
    * ``'flip'`` — horizontal flip with probability 0.5;
    * ``'roll'`` — circular shift by up to ``roll_px`` px on each axis (``torch.roll``);
    * ``'nda'`` — NDA-style (neuromorphic data augmentation, Li et al. 2022): horizontal flip with
      probability 0.5, then one of a roll by up to ``roll_px`` px, a rotation by up to 30 degrees, or a
      horizontal shear by up to 30 degrees, chosen uniformly per sample (warps sample nearest
      pixels, so integer counts stay integer).

    Randomness comes from ``generator`` (or torch's global generator, which DataLoader seeds per
    worker).
    """
    tokens = parse_augment(augment) if isinstance(augment, str) else tuple(augment)
    x = _as_tensor(x)
    g = generator
    B = x.shape[0]
    for tok in tokens:
        if tok in ("shift", "crop"):
            x = _shift_crop(x, 2 if tok == "shift" else crop_pad, g)
        elif tok in ("flip", "nda"):
            flip = (torch.rand(B, generator=g) < 0.5).view(B, *([1] * (x.ndim - 1)))
            x = torch.where(flip, x.flip(-1), x)
        if tok == "roll":
            x = _roll(x, roll_px, g)
        elif tok == "nda":
            choice = torch.randint(0, 3, (B,), generator=g)
            x = _roll(x, roll_px, g, pick=choice == 0)
            angle = (torch.rand(B, generator=g) * 2 - 1) * (torch.pi / 6)
            shear = torch.tan((torch.rand(B, generator=g) * 2 - 1) * (torch.pi / 6))
            theta = torch.zeros(B, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            rot = choice == 1
            theta[rot, 0, 0], theta[rot, 0, 1] = torch.cos(angle[rot]), -torch.sin(angle[rot])
            theta[rot, 1, 0], theta[rot, 1, 1] = torch.sin(angle[rot]), torch.cos(angle[rot])
            theta[choice == 2, 0, 1] = shear[choice == 2]
            warp = choice > 0
            if bool(warp.any()):
                x = x.clone()
                x[warp] = _affine_nearest(x[warp], theta[warp])
    return x
