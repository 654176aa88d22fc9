"""Event-camera detection data: moving real MNIST digits (emulated events) and Prophesee Gen1.

Both data sets yield ``(frames, boxes)``:

* ``frames``: float32 tensor ``[T, 2, H, W]`` — 2-channel event counts in T equal time bins
  (channel 0 = OFF events (p = 0), channel 1 = ON events (p = 1));
* ``boxes``: float32 tensor ``[n, 5]`` = (x1, y1, x2, y2, class) in pixels of ``frames`` (continuous
  corner coordinates: a box covering pixel columns 3..5 has x1 = 3, x2 = 6).

Batch them with :func:`collate_detection` (frames ``[T, B, 2, H, W]``, a list of box tensors).

**MovingDigits** — several real MNIST digits (the embedded subset of :mod:`spquant.data.embedded`, or
the full MNIST from an IDX folder) move on straight lines over a black canvas during a time window;
the video (``steps + 1`` frames, bilinear sub-pixel placement, overlapping digits combined by max)
goes through a log-intensity change detector (:func:`video_to_events`, the event-camera model: one
event per contrast threshold crossed, timestamps interpolated inside the step, per-pixel threshold
mismatch). Boxes are exact, computed from the digit's nonzero pixels and its position, not from
the events: ``box='end'`` (default) gives the tight box at the window's END time — the convention
of Gen1 labels, which annotate the scene at the end of the event window — and ``box='union'`` the
union of the boxes over the window (the area the digit swept; on a straight path the union of the
start and end boxes). The class is the digit. Generation is deterministic: sample ``i`` depends only
on ``(seed, i)`` and the parameters. Samples are cached to an ``.npz`` keyed by a hash of all
parameters (``cache_dir``, default ``$SPQUANT_CACHE`` or ``~/.cache/spquant``). ``downsample = d``
sums the event counts over d x d pixel blocks (a sensor of lower resolution; boxes are divided by d)
so small CPU models can see a larger scene.

>>> ds = MovingDigits(num_samples=2, canvas=32, digits=(1, 1), T=2, steps=4, cache_dir=None)
>>> frames, boxes = ds[0]
>>> tuple(frames.shape), tuple(boxes.shape)
((2, 2, 32, 32), (1, 5))

**Gen1DetectionFrames** — the Prophesee Gen1 automotive data set (``root/{train,val,test}/*_td.dat`` with a
``*_bbox.npy`` next to each). One sample per labelled timestamp: the events just before it, either
the last ``events_per_window`` events (25,000 — the authors' choice) or those in the last
``window_us`` microseconds, binned into T frames; the boxes of that timestamp, clipped to the
sensor, with the usual Gen1 filter (boxes whose diagonal is < 30 px or whose shorter side is
< 10 px are dropped; timestamps in the first 0.5 s of a recording are skipped). Classes: 0 car,
1 pedestrian.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spquant.data.events import EVENT_DTYPE, make_events

__all__ = [
    "video_to_events",
    "events_to_frames",
    "collate_detection",
    "MovingDigitsConfig",
    "MovingDigits",
    "render_digits",
    "Gen1DetectionFrames",
    "filter_boxes",
    "GEN1_CLASSES",
    "BENCHMARKS",
]

GEN1_CLASSES = ("car", "pedestrian")
_VERSION = 1  # bump when generation changes (invalidates caches)


# ------------------------------------------------------------------------------------------------
# event camera model and event histograms
# ------------------------------------------------------------------------------------------------
def video_to_events(
    video,
    times_us,
    threshold: float = 0.2,
    threshold_sigma: float = 0.0,
    eps: float = 0.1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Events of a video ``[S + 1, H, W]`` (intensities in [0, 1]) seen by an event camera.

    Every pixel keeps a reference log intensity ``ref`` (from frame 0). At each frame the log
    intensity ``L = log(I + eps)`` is compared with ``ref``: each contrast threshold ``C`` crossed
    gives one event (ON if L rose, OFF if it fell) and moves ``ref`` by ``C``; the timestamp of the
    k-th crossing is interpolated linearly between the two frames' times. ``C`` differs per pixel
    (Gaussian, ``threshold_sigma``, drawn from ``rng``). Vectorised over pixels; loops over frames.

    >>> v = np.zeros((2, 1, 2)); v[1, 0, 1] = 1.0        # one pixel turns on
    >>> ev = video_to_events(v, [0, 100], threshold=0.5)
    >>> ev["x"].tolist(), ev["p"].tolist(), len(ev)      # log(1.1/0.1) = 2.4 -> 4 thresholds of 0.5
    ([1, 1, 1, 1], [1, 1, 1, 1], 4)
    """
    video = np.asarray(video, dtype=np.float64)
    times = np.asarray(times_us, dtype=np.float64)
    if video.ndim != 3 or times.shape != (video.shape[0],):
        raise ValueError(
            f"video must be [S+1, H, W] with one time per frame, got {video.shape} and {times.shape}"
        )
    H, W = video.shape[1:]
    C = np.full((H, W), float(threshold))
    if threshold_sigma > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        C = np.clip(C + rng.normal(0.0, threshold_sigma, (H, W)), 0.01, None)
    logv = np.log(np.clip(video, 0.0, None) + eps)
    ref = logv[0].copy()
    xs, ys, ts, ps = [], [], [], []
    for s in range(1, video.shape[0]):
        prev, cur = logv[s - 1], logv[s]
        d = cur - ref
        n = np.floor(np.abs(d) / C).astype(np.int64)
        iy, ix = np.nonzero(n)
        if iy.size == 0:
            continue
        cnt = n[iy, ix]
        sign = np.sign(d[iy, ix])
        k = (
            np.concatenate([np.arange(1, c + 1) for c in cnt])
            if cnt.max() > 1
            else np.ones(cnt.size, np.int64)
        )
        rep = np.repeat(np.arange(iy.size), cnt)
        level = ref[iy, ix][rep] + sign[rep] * k * C[iy, ix][rep]
        span = (cur - prev)[iy, ix][rep]
        frac = np.where(
            np.abs(span) > 1e-12, (level - prev[iy, ix][rep]) / np.where(np.abs(span) > 1e-12, span, 1), 1.0
        )
        frac = np.clip(frac, 0.0, 1.0)
        ts.append(times[s - 1] + frac * (times[s] - times[s - 1]))
        xs.append(ix[rep])
        ys.append(iy[rep])
        ps.append((sign[rep] > 0).astype(np.uint8))
        ref[iy, ix] += sign * cnt * C[iy, ix]
    if not ts:
        return np.zeros(0, EVENT_DTYPE)
    t = np.floor(np.concatenate(ts)).astype(np.int64)
    return make_events(np.concatenate(xs), np.concatenate(ys), t, np.concatenate(ps))


def events_to_frames(
    events: np.ndarray,
    T: int,
    size: tuple[int, int],
    t0: float | None = None,
    t1: float | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """2-channel count histograms ``float32 [T, 2, H, W]`` of events in T equal time bins of [t0, t1].

    ``size`` = (H, W) of the output; coordinates are multiplied by ``scale`` (e.g. 0.5 to halve the
    resolution) and events outside are dropped. Channel = polarity (0 OFF, 1 ON). Defaults: the
    events' first and last timestamps.

    >>> ev = make_events([0, 1, 1], [0, 0, 1], [0, 5, 10], [1, 0, 1])
    >>> events_to_frames(ev, 2, (2, 2))[:, :, :, :].sum(axis=(2, 3)).tolist()
    [[0.0, 1.0], [1.0, 1.0]]
    """
    H, W = size
    out = np.zeros((T, 2, H, W), np.float32)
    if events.size == 0:
        return out
    t = events["t"].astype(np.float64)
    t0 = float(t[0]) if t0 is None else float(t0)
    t1 = float(t[-1]) if t1 is None else float(t1)
    span = max(t1 - t0, 1e-9)
    b = np.clip(np.floor((t - t0) / span * T).astype(np.int64), 0, T - 1)
    x = np.floor(events["x"].astype(np.float64) * scale).astype(np.int64)
    y = np.floor(events["y"].astype(np.float64) * scale).astype(np.int64)
    keep = (x >= 0) & (x < W) & (y >= 0) & (y < H) & (t >= t0) & (t <= t1)
    flat = ((b * 2 + events["p"].astype(np.int64)) * H + y) * W + x
    out.reshape(-1)[:] = np.bincount(flat[keep], minlength=out.size).astype(np.float32)
    return out


def collate_detection(batch):
    """[(frames [T, 2, H, W], boxes [n, 5]), ...] -> (frames [T, B, 2, H, W], [boxes, ...])."""
    frames = torch.stack([torch.as_tensor(f) for f, _ in batch], 1)
    return frames, [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 5) for _, b in batch]


# ------------------------------------------------------------------------------------------------
# moving digits
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MovingDigitsConfig:
    """Parameters of :class:`MovingDigits` (all of them enter the cache key)."""

    num_samples: int = 1000
    split: str = "train"  # MNIST split the digits come from
    canvas: int = 64
    digits: tuple[int, int] = (1, 3)  # min, max digits per sample
    T: int = 4
    steps: int = 16  # rendered frames per window (plus the initial one)
    window_us: int = 100_000
    speed: tuple[float, float] = (6.0, 24.0)  # pixels per window
    threshold: float = 0.2
    threshold_sigma: float = 0.03
    eps: float = 0.1
    box: str = "end"  # 'end' or 'union'
    source: str = "embedded"  # 'embedded' (6000/1000 real MNIST subset) or 'mnist' (full, from mnist_root)
    downsample: int = 1  # frames summed over d x d pixel blocks (a lower-resolution sensor); boxes / d
    seed: int = 0

    def __post_init__(self):
        if self.box not in ("end", "union"):
            raise ValueError(f"box must be 'end' or 'union', got {self.box!r}")
        if self.source not in ("embedded", "mnist"):
            raise ValueError(f"source must be 'embedded' or 'mnist', got {self.source!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if self.canvas < 29:
            raise ValueError("canvas must be at least 29 pixels (a 28x28 digit plus sub-pixel motion)")
        if self.downsample < 1 or self.canvas % self.downsample:
            raise ValueError(
                f"downsample must be a positive divisor of canvas {self.canvas}, got {self.downsample}"
            )
        if not 1 <= self.digits[0] <= self.digits[1]:
            raise ValueError(f"digits must be (min, max) with 1 <= min <= max, got {self.digits}")

    def key(self) -> str:
        d = dataclasses.asdict(self)
        d["_version"] = _VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _load_digits(source: str, split: str, mnist_root=None):
    if source == "embedded":
        from spquant.data.embedded import load_embedded_mnist

        xtr, ytr, xte, yte = load_embedded_mnist()
        return (xtr, ytr) if split == "train" else (xte, yte)
    from spquant.data.idx import load_idx_split
    from spquant.data.roots import data_root

    return load_idx_split(data_root("mnist", mnist_root), split)


def _place(canvas: np.ndarray, digit: np.ndarray, px: float, py: float) -> None:
    """Max-composite ``digit`` (float [28, 28]) at sub-pixel top-left (px, py) with bilinear weights."""
    ix, iy = int(np.floor(px)), int(np.floor(py))
    fx, fy = px - ix, py - iy
    h, w = digit.shape
    patch = np.zeros((h + 1, w + 1))
    patch[:h, :w] += (1 - fx) * (1 - fy) * digit
    patch[:h, 1:] += fx * (1 - fy) * digit
    patch[1:, :w] += (1 - fx) * fy * digit
    patch[1:, 1:] += fx * fy * digit
    region = canvas[iy : iy + h + 1, ix : ix + w + 1]
    np.maximum(region, patch[: region.shape[0], : region.shape[1]], out=region)


def render_digits(digits, starts, ends, canvas: int, steps: int) -> np.ndarray:
    """The video ``[steps + 1, canvas, canvas]`` of digits moving linearly from ``starts`` to ``ends``
    (top-left corners (x, y)), sampled at fractions 0, 1/steps, ..., 1 of the window."""
    video = np.zeros((steps + 1, canvas, canvas))
    for s in range(steps + 1):
        a = s / steps
        for d, p0, p1 in zip(digits, starts, ends):
            _place(video[s], d, p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]))
    return video


def _tight(digit: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.nonzero(digit.max(1) > 0)[0]
    cols = np.nonzero(digit.max(0) > 0)[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def moving_digits_sample(cfg: MovingDigitsConfig, i: int, images: np.ndarray, labels: np.ndarray):
    """(events, boxes float32 [n, 5]) of sample ``i``; depends only on (cfg, i)."""
    rng = np.random.default_rng([cfg.seed, i, 0 if cfg.split == "train" else 1])
    n = int(rng.integers(cfg.digits[0], cfg.digits[1] + 1))
    idx = rng.integers(0, len(images), n)
    lim = cfg.canvas - 29
    digits, starts, ends, boxes = [], [], [], []
    for j in idx:
        d = images[j].astype(np.float64) / 255.0
        p0 = rng.uniform(0, lim, 2)
        ang = rng.uniform(0, 2 * np.pi)
        v = rng.uniform(*cfg.speed)
        p1 = np.clip(p0 + v * np.array([np.cos(ang), np.sin(ang)]), 0, lim)
        digits.append(d)
        starts.append(p0)
        ends.append(p1)
        c0, r0, c1, r1 = _tight(images[j])
        end_box = [p1[0] + c0, p1[1] + r0, p1[0] + c1, p1[1] + r1]
        if cfg.box == "union":
            b = [
                min(p0[0], p1[0]) + c0,
                min(p0[1], p1[1]) + r0,
                max(p0[0], p1[0]) + c1,
                max(p0[1], p1[1]) + r1,
            ]
        else:
            b = end_box
        boxes.append([*b, float(labels[j])])
    video = render_digits(digits, starts, ends, cfg.canvas, cfg.steps)
    times = np.linspace(0, cfg.window_us, cfg.steps + 1)
    events = video_to_events(
        video, times, cfg.threshold, cfg.threshold_sigma, cfg.eps, rng=np.random.default_rng([cfg.seed, 7])
    )
    return events, np.asarray(boxes, np.float32).reshape(-1, 5)


class MovingDigits(Dataset):
    """Moving real MNIST digits as event frames with exact boxes (see the module docstring).

    Args: the fields of :class:`MovingDigitsConfig` as keywords, plus ``cache_dir`` (None = no
    cache; default ``$SPQUANT_CACHE`` or ``~/.cache/spquant``) and ``mnist_root`` (for
    ``source='mnist'``; default ``$SPQUANT_DATA/mnist``).
    ``num_classes`` is 10; ``events(i)`` regenerates the raw events of sample ``i``.
    """

    num_classes = 10

    def __init__(self, cache_dir: str | os.PathLike | None = "default", mnist_root=None, **kwargs):
        for k in ("digits", "speed"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        self.config = MovingDigitsConfig(**kwargs)
        self.mnist_root = mnist_root
        if cache_dir == "default":
            cache_dir = os.environ.get(
                "SPQUANT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "spquant")
            )
        self.cache_path = (
            None if cache_dir is None else Path(cache_dir) / "moving_digits" / f"{self.config.key()}.npz"
        )
        self._images = None
        if self.cache_path is not None and self.cache_path.is_file():
            with np.load(self.cache_path, allow_pickle=False) as z:
                self.frames, self.boxes, self.offsets = z["frames"], z["boxes"], z["offsets"]
        else:
            self._generate()
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez_compressed(tmp, frames=self.frames, boxes=self.boxes, offsets=self.offsets)
                os.replace(tmp, self.cache_path)

    def _digits(self):
        if self._images is None:
            self._images = _load_digits(self.config.source, self.config.split, self.mnist_root)
        return self._images

    def _generate(self) -> None:
        cfg = self.config
        images, labels = self._digits()
        d = cfg.downsample
        size = cfg.canvas // d
        frames = np.zeros((cfg.num_samples, cfg.T, 2, size, size), np.uint8)
        boxes, offsets = [], [0]
        for i in range(cfg.num_samples):
            ev, b = moving_digits_sample(cfg, i, images, labels)
            f = events_to_frames(ev, cfg.T, (cfg.canvas, cfg.canvas), 0, cfg.window_us)
            if d > 1:
                f = f.reshape(cfg.T, 2, size, d, size, d).sum(axis=(3, 5))
                b = b.copy()
                b[:, :4] /= d
            frames[i] = np.minimum(f, 255).astype(np.uint8)
            boxes.append(b)
            offsets.append(offsets[-1] + len(b))
        self.frames = frames
        self.boxes = np.concatenate(boxes).astype(np.float32)
        self.offsets = np.asarray(offsets, np.int64)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, i: int):
        return (
            torch.from_numpy(self.frames[i].astype(np.float32)),
            torch.from_numpy(self.boxes[self.offsets[i] : self.offsets[i + 1]].copy()),
        )

    def events(self, i: int) -> np.ndarray:
        images, labels = self._digits()
        return moving_digits_sample(self.config, i, images, labels)[0]


# ------------------------------------------------------------------------------------------------
# Prophesee Gen1
# ------------------------------------------------------------------------------------------------
# The box filters of the Prophesee automotive benchmarks, as the benchmarks' evaluation code applies
# them (prophesee-automotive-dataset-toolbox, src/io/box_filtering.py, "the same filtering that we
# apply in Learning to detect objects on a 1 Megapixel Event Camera", Perot et al. 2020): keep a box
# when its timestamp is after the first 0.5 s of the recording, its diagonal is >= min_diag and both
# sides are >= min_side, in sensor pixels. 1 Mpx keeps the three classes those papers report
# (pedestrian, two-wheeler, car; class ids 0-2 of the seven annotated).
BENCHMARKS = {
    "gen1": {
        "sensor": (304, 240),
        "classes": ("car", "pedestrian"),
        "min_diag": 30.0,
        "min_side": 10.0,
        "skip_us": 500_000,
        "keep_classes": None,
    },
    "1mpx": {
        "sensor": (1280, 720),
        "classes": ("pedestrian", "two-wheeler", "car"),
        "min_diag": 60.0,
        "min_side": 20.0,
        "skip_us": 500_000,
        "keep_classes": (0, 1, 2),
    },
}


def filter_boxes(
    boxes: np.ndarray,
    min_diag: float = 30.0,
    min_side: float = 10.0,
    skip_us: int = 500_000,
    keep_classes=None,
) -> np.ndarray:
    """The benchmark box filter (defaults: Gen1; :data:`BENCHMARKS` has both): keep boxes with
    ``ts > skip_us``, ``w^2 + h^2 >= min_diag^2``, ``w >= min_side`` and ``h >= min_side`` and, when
    ``keep_classes`` is given, a class id among them (structured array with fields ts, w, h, class_id).

    >>> from spquant.data.readers.prophesee import BOX_DTYPE
    >>> b = np.zeros(4, BOX_DTYPE); b["ts"] = [600_000] * 3 + [500_000]; b["w"] = [40, 40, 9, 40]; b["h"] = [30, 15, 40, 30]
    >>> filter_boxes(b)["w"].tolist()            # 40x15 kept (diag 42.7, sides >= 10); 9x40 and t = 0.5 s dropped
    [40.0, 40.0]
    """
    w, h = boxes["w"].astype(np.float64), boxes["h"].astype(np.float64)
    keep = (w * w + h * h >= min_diag * min_diag) & (w >= min_side) & (h >= min_side)
    keep &= boxes["ts"].astype(np.int64) > skip_us
    if keep_classes is not None:
        keep &= np.isin(boxes["class_id"].astype(np.int64), np.asarray(keep_classes, np.int64))
    return boxes[keep]


class Gen1DetectionFrames(Dataset):
    """Prophesee Gen1 (or 1 Megapixel) automotive detection as frames + filtered boxes (see the module
    docstring).

    Built on :class:`spquant.data.datasets.Gen1Detection` (the raw windows: events and box records
    per labelled timestamp); this class adds the box filter, clipping, scaling and the histograms.

    Args:
        root: folder with ``train/``, ``val/``, ``test/`` of ``*_td.dat`` + ``*_bbox.npy`` pairs.
        split: 'train', 'val' or 'test'.
        events_per_window: window = the last N events up to the label time (default 25,000); or
        window_us: window = the last ``window_us`` microseconds (set ``events_per_window`` to None or 0).
        T: time bins per window (equal time spans of the window).
        input_size: (H, W) of the frames; the sensor (304x240 Gen1, 1280x720 1 Mpx) is scaled down by
            one factor for both axes when it does not fit (``scale = min(1, H / h, W / w)``, never
            up) and zero-padded at the bottom/right to ``input_size``; boxes are scaled alike.
        benchmark: 'gen1' or '1mpx' (sensor, classes and box filter of :data:`BENCHMARKS`).
        min_diag, min_side, skip_us: override the benchmark's box filter (:func:`filter_boxes`), in
            sensor pixels; labelled timestamps left without boxes are not samples.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        events_per_window: int | None = 25_000,
        window_us: int = 50_000,
        T: int = 1,
        input_size: tuple[int, int] = (240, 304),
        benchmark: str = "gen1",
        min_diag: float | None = None,
        min_side: float | None = None,
        skip_us: int | None = None,
    ):
        from spquant.data.datasets import Gen1Detection, Megapixel1Detection

        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}")
        bench = BENCHMARKS[benchmark]
        raw_cls = {"gen1": Gen1Detection, "1mpx": Megapixel1Detection}[benchmark]
        events_per_window = events_per_window or None  # 0 (a TOML recipe has no None): time windows
        self.raw = raw_cls(root, split, window_us=window_us, window_events=events_per_window)
        self.benchmark, self.num_classes, self.classes = benchmark, len(bench["classes"]), bench["classes"]
        self.events_per_window, self.window_us, self.T = events_per_window, window_us, T
        self.filter = {
            "min_diag": bench["min_diag"] if min_diag is None else min_diag,
            "min_side": bench["min_side"] if min_side is None else min_side,
            "skip_us": bench["skip_us"] if skip_us is None else skip_us,
            "keep_classes": bench["keep_classes"],
        }
        self.input_size = tuple(input_size)
        self.sensor = tuple(self.raw.sensor_size)  # (width, height)
        self.scale = min(1.0, self.input_size[0] / self.sensor[1], self.input_size[1] / self.sensor[0])
        # keep the labelled timestamps that still have boxes after filtering
        self.samples = []  # indices into self.raw
        for j, (k, ts) in enumerate(self.raw.samples):
            b = self.raw._boxes[k]
            if filter_boxes(b[b["ts"] == ts], **self.filter).size:
                self.samples.append(j)

    def __len__(self) -> int:
        return len(self.samples)

    def label_time(self, i: int) -> int:
        return self.raw.samples[self.samples[i]][1]

    def window_events(self, i: int) -> np.ndarray:
        """The raw events of sample ``i``'s window."""
        return self.raw[self.samples[i]][0]

    def __getitem__(self, i: int):
        ev, b = self.raw[self.samples[i]]
        ts = self.label_time(i)
        t0 = None if self.events_per_window is not None else ts - self.window_us
        frames = events_to_frames(ev, self.T, self.input_size, t0, ts if ev.size else None, scale=self.scale)
        b = filter_boxes(b, **self.filter)
        W, H = self.sensor
        x1 = np.clip(b["x"], 0, W)
        y1 = np.clip(b["y"], 0, H)
        x2 = np.clip(b["x"] + b["w"], 0, W)
        y2 = np.clip(b["y"] + b["h"], 0, H)
        boxes = np.stack(
            [
                x1 * self.scale,
                y1 * self.scale,
                x2 * self.scale,
                y2 * self.scale,
                b["class_id"].astype(np.float64),
            ],
            1,
        )
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        return torch.from_numpy(frames), torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 5)
