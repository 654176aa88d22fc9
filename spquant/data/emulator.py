"""An event-camera emulator: turn static images into event streams the way N-MNIST was recorded.

N-MNIST (Orchard et al. 2015) was made by showing each MNIST digit on a monitor and moving an ATIS
camera in three saccades (an isosceles triangle, ~100 ms each, ~300 ms in all); CIFAR10-DVS (Li et
al. 2017) moved the image on the screen instead. This module does the same in software:

1. the image (intensities scaled to [0, 1]) is placed in the middle of a larger sensor (28x28 digit
   on the 34x34 N-MNIST sensor: a 3-pixel border) and moved along the saccade path; at every time
   step ``dt_us`` it is rendered with sub-pixel (bilinear) shifts;
2. every pixel keeps a reference log intensity ``ref`` (initialised from the first frame); the log
   intensity is ``L = log(I * gain + eps)`` (``eps`` models the light of a black screen and keeps the
   log finite);
3. when ``L - ref`` reaches the pixel's ON threshold (or ``ref - L`` its OFF threshold) the pixel
   emits one event per threshold crossed (several per step if the change is large) and moves
   ``ref`` by that many thresholds; each event's timestamp is interpolated linearly between the two
   steps at the moment ``L`` crossed the level;
4. thresholds differ per pixel (``threshold_sigma``: Gaussian mismatch, fixed for the sensor, drawn
   from ``seed``); an optional refractory period drops crossings that come sooner than
   ``refractory_us`` after the pixel's last event (the reference still moves: the pixel missed
   them); optional shot noise adds spontaneous events (Poisson, ``shot_noise_hz`` per pixel) with
   random polarity and time.

Everything is vectorised over pixels and over a batch of images (torch float32 on the CPU); the
only Python loops run over time steps and over the (few) crossings per step. The result is
deterministic for a given ``seed`` (and, with shot noise, the images' indices ``index_offset + i``).

>>> import numpy as np
>>> img = np.zeros((28, 28), np.uint8); img[8:20, 12:16] = 255
>>> ev = emulate(img)
>>> int(ev["x"].max()) < 34 and int(ev["y"].max()) < 34 and bool(np.all(np.diff(ev["t"]) >= 0))
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from spquant.data.events import EVENT_DTYPE


@dataclass(frozen=True)
class EmulatorConfig:
    """Parameters of :func:`emulate` (all times in microseconds, distances in pixels).

    sensor_size: (width, height) of the emulated sensor; the image is centred on it.
    duration_us: total recording time, split evenly over the saccades.
    n_saccades: number of straight moves between triangle vertices (3 = one full triangle).
    saccade_base, saccade_height: the isosceles triangle the image moves along (base horizontal
        on top, apex down; image y grows downwards); the path visits (-base/2, -height/2) ->
        (0, +height/2) -> (+base/2, -height/2) -> back, relative to the centred position: down, up
        and right, then left, the order seen in the real N-MNIST recording's event centroids.
    profile: 'cosine' (smooth start and stop at every vertex, like a saccade) or 'linear'.
    dt_us: rendering time step; timestamps are interpolated within a step.
    threshold_on, threshold_off: contrast thresholds C in log-intensity units.
    threshold_sigma: standard deviation of the per-pixel threshold mismatch (log units, clipped so
        every threshold stays >= 0.01).
    blur_sigma: Gaussian blur (pixels) applied to the image first, modelling the camera optics
        (0 = sharp).
    log_eps: added to the intensity before the log (dark-screen light).
    gain: intensity scale applied to the [0, 1] image before the log.
    refractory_us: minimum time between two events of a pixel (0 = none).
    shot_noise_hz: rate of spontaneous events per pixel (0 = none).
    invert_polarity: report brightening as polarity 0 and darkening as 1. The default (False) is
        the physical convention (p = 1 = brighter). The real N-MNIST recording has the opposite
        sign relative to a bright digit on a dark screen (measured on sample_nmnist.bin: with the
        image moving down, its ON events lie above its OFF events); set True to match N-MNIST files.
    seed: seeds the threshold mismatch and the noise.
    """

    sensor_size: tuple[int, int] = (34, 34)
    duration_us: int = 300_000
    n_saccades: int = 3
    saccade_base: float = 5.0
    saccade_height: float = 5.0
    profile: str = "cosine"
    dt_us: int = 2000
    threshold_on: float = 0.34
    threshold_off: float = 0.34
    threshold_sigma: float = 0.02
    blur_sigma: float = 0.5
    log_eps: float = 0.1
    gain: float = 1.0
    refractory_us: int = 0
    shot_noise_hz: float = 0.0
    invert_polarity: bool = False
    seed: int = 0

    def key(self) -> str:
        """A short hash of the parameters (used to key caches)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def saccade_path(cfg: EmulatorConfig) -> np.ndarray:
    """Image displacement (dx, dy) in pixels at every step 0..duration/dt: float64 ``[K + 1, 2]``."""
    b, h = cfg.saccade_base, cfg.saccade_height
    verts = np.array([[-b / 2, -h / 2], [0.0, h / 2], [b / 2, -h / 2]])
    n_steps = int(round(cfg.duration_us / cfg.dt_us))
    t = np.arange(n_steps + 1) * (cfg.n_saccades / n_steps)  # saccade coordinate 0..n_saccades
    seg = np.minimum(np.floor(t).astype(int), cfg.n_saccades - 1)
    u = t - seg
    if cfg.profile == "cosine":
        u = 0.5 - 0.5 * np.cos(np.pi * u)
    elif cfg.profile != "linear":
        raise ValueError(f"profile must be 'cosine' or 'linear', got {cfg.profile!r}")
    a, z = verts[seg % 3], verts[(seg + 1) % 3]
    return a + (z - a) * u[:, None]


def threshold_maps(cfg: EmulatorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ON and OFF thresholds ``[H, W]`` (fixed for the sensor, drawn from ``cfg.seed``)."""
    w, h = cfg.sensor_size
    g = torch.Generator().manual_seed(int(cfg.seed))
    on = cfg.threshold_on + cfg.threshold_sigma * torch.randn(h, w, generator=g)
    off = cfg.threshold_off + cfg.threshold_sigma * torch.randn(h, w, generator=g)
    return on.clamp_min(0.01), off.clamp_min(0.01)


def _as_float_images(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    else:
        x = x.to(torch.float32)
    if x.ndim != 3:
        raise ValueError(f"images must be [N, H, W] grayscale, got shape {tuple(x.shape)}")
    return x


def emulate_batch(
    images,
    config: EmulatorConfig | None = None,
    *,
    index_offset: int = 0,
    return_offsets: bool = False,
    **overrides,
):
    """Emulate a batch of grayscale images ``[N, H, W]`` (uint8 0..255 or float 0..1).

    Returns a list of N event arrays (``EVENT_DTYPE``, sorted by t), or, with
    ``return_offsets=True``, one concatenated array and ``offsets`` (int64 ``[N + 1]``: image i's
    events are ``events[offsets[i]:offsets[i + 1]]``) — the compact form used for caching.
    Keyword overrides replace fields of ``config`` (e.g. ``threshold_on=0.3``).
    """
    cfg = dataclasses.replace(config or EmulatorConfig(), **overrides)
    # the per-step tensors are small: torch's intra-op threads cost more than they gain (and
    # collapse on a busy machine); parallelise over processes instead (see emulate_to_cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _emulate_batch(images, cfg, index_offset, return_offsets)
    finally:
        torch.set_num_threads(threads)


def _emulate_batch(images, cfg: EmulatorConfig, index_offset: int, return_offsets: bool):
    imgs = _as_float_images(images) * cfg.gain
    n, ih, iw = imgs.shape
    sw, sh = cfg.sensor_size
    if ih > sh or iw > sw:
        raise ValueError(f"image {iw}x{ih} larger than the sensor {sw}x{sh}")
    path = saccade_path(cfg)
    blur_r = int(math.ceil(3 * cfg.blur_sigma)) if cfg.blur_sigma > 0 else 0
    margin = int(math.ceil(np.abs(path).max())) + 2 + blur_r
    # canvas: the sensor plus a margin, the image centred on the sensor
    canvas = torch.zeros(n, sh + 2 * margin, sw + 2 * margin)
    oy, ox = margin + (sh - ih) // 2, margin + (sw - iw) // 2
    canvas[:, oy : oy + ih, ox : ox + iw] = imgs
    if cfg.blur_sigma > 0:
        r = blur_r
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / cfg.blur_sigma) ** 2)
        k = k / k.sum()
        # separable blur as weighted shifted sums: elementwise, so the result of an image does not
        # depend on the batch it is in (conv2d's algorithm choice would)
        tmp = torch.zeros_like(canvas)
        for i in range(2 * r + 1):
            d = i - r
            tmp[:, :, max(0, -d) : canvas.shape[2] - max(0, d)] += (
                k[i] * canvas[:, :, max(0, d) : canvas.shape[2] - max(0, -d)]
            )
        canvas = torch.zeros_like(canvas)
        for i in range(2 * r + 1):
            d = i - r
            canvas[:, max(0, -d) : tmp.shape[1] - max(0, d)] += (
                k[i] * tmp[:, max(0, d) : tmp.shape[1] - max(0, -d)]
            )
    # active window: the pixels any shifted (blurred) image can reach; others never change
    reach = int(math.ceil(np.abs(path).max())) + 1 + blur_r
    y0, y1 = max(0, (sh - ih) // 2 - reach), min(sh, (sh - ih) // 2 + ih + reach)
    x0, x1 = max(0, (sw - iw) // 2 - reach), min(sw, (sw - iw) // 2 + iw + reach)
    on_map, off_map = threshold_maps(cfg)
    c_on = on_map[y0:y1, x0:x1].reshape(1, -1)
    c_off = off_map[y0:y1, x0:x1].reshape(1, -1)
    ah, aw = y1 - y0, x1 - x0

    npix = ah * aw
    hbuf = torch.empty(n, ah + 1, aw)
    tmp = torch.empty(n, ah + 1, aw)

    def render(k: int) -> torch.Tensor:
        # sensor pixel (u, v) sees canvas point (u - dx, v - dy) (+ margin): bilinear sample,
        # computed separably (horizontal lerp of ah + 1 rows, then vertical lerp)
        dx, dy = path[k]
        fx, fy = math.floor(-dx), math.floor(-dy)
        ax, ay = float(-dx - fx), float(-dy - fy)
        r0, c0 = margin + y0 + fy, margin + x0 + fx
        left = canvas[:, r0 : r0 + ah + 1, c0 : c0 + aw]
        right = canvas[:, r0 : r0 + ah + 1, c0 + 1 : c0 + 1 + aw]
        torch.sub(right, left, out=tmp)
        torch.add(left, tmp, alpha=ax, out=hbuf)
        top, bot = hbuf[:, :-1], hbuf[:, 1:]
        img = torch.lerp(top, bot, ay) if ay else top.clone()
        img = img.reshape(n, npix)
        img.add_(cfg.log_eps).log_()
        return img

    prev = render(0)
    ref = prev.clone()
    last_t = torch.full(ref.shape, -1e18, dtype=torch.float64) if cfg.refractory_us > 0 else None
    out_pix, out_t, out_p = [], [], []
    diff = torch.empty_like(ref)
    neg_c_off = -c_off
    for k in range(1, path.shape[0]):
        cur = render(k)
        torch.sub(cur, ref, out=diff)
        fired = (diff >= c_on) | (diff <= neg_c_off)
        flat = fired.view(-1).nonzero().squeeze(1)
        if flat.numel():
            col = flat % npix
            d = diff.view(-1)[flat]
            pol = d > 0
            thr = torch.where(pol, c_on[0, col], c_off[0, col])
            cnt = torch.floor(d.abs() / thr).to(torch.int64)
            sign = torch.where(pol, 1.0, -1.0)
            ref_old, l0, l1 = ref.view(-1)[flat], prev.view(-1)[flat], cur.view(-1)[flat]
            ref.view(-1)[flat] = ref_old + sign * cnt * thr
            if bool((cnt == 1).all()):
                rep = None
                j = torch.ones(cnt.numel())
            else:  # one entry per crossing: j = 1..cnt
                rep = torch.repeat_interleave(torch.arange(cnt.numel()), cnt)
                starts = torch.cumsum(cnt, 0) - cnt
                j = (torch.arange(rep.numel()) - starts[rep] + 1).to(torch.float32)
                ref_old, l0, l1, sign, thr, flat, pol = (
                    v[rep] for v in (ref_old, l0, l1, sign, thr, flat, pol)
                )
            level = ref_old + sign * j * thr
            denom = l1 - l0
            frac = ((level - l0) / torch.where(denom == 0, 1.0, denom)).clamp_(0.0, 1.0)
            t = (k - 1) * cfg.dt_us + frac.to(torch.float64) * cfg.dt_us
            pix, pp = flat, pol
            if last_t is not None:
                keep = torch.zeros(pix.numel(), dtype=torch.bool)
                jj = j.to(torch.int64)
                lt = last_t.view(-1)
                for jv in range(1, int(cnt.max()) + 1):  # loop over crossings per step, not events
                    sel = (jj == jv).nonzero(as_tuple=True)[0]
                    ok = t[sel] - lt[pix[sel]] >= cfg.refractory_us
                    keep[sel[ok]] = True
                    lt[pix[sel[ok]]] = t[sel[ok]]
                pix, t, pp = pix[keep], t[keep], pp[keep]
            # order this step's events by (image, time); a stable sort by image at the end then
            # yields (image, step, time) order without sorting all events by time
            t_int = torch.floor(t).to(torch.int64)
            key = (pix // npix) * (cfg.dt_us + 1) + (t_int - (k - 1) * cfg.dt_us)
            perm = torch.sort(key, stable=True).indices
            out_pix.append(pix[perm])
            out_t.append(t_int[perm])
            out_p.append(pp[perm])
        prev = cur
    if out_pix:
        pix = torch.cat(out_pix).numpy()
        t_us = torch.cat(out_t).numpy()
        pol = torch.cat(out_p).numpy().astype(np.uint8)
    else:
        pix, t_us, pol = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    img_idx = pix // (ah * aw)
    rem = pix % (ah * aw)
    ys, xs = rem // aw + y0, rem % aw + x0
    if cfg.invert_polarity:
        pol = (1 - pol).astype(np.uint8)
    if cfg.shot_noise_hz > 0:
        img_idx, xs, ys, t_us, pol = _add_shot_noise(cfg, n, index_offset, img_idx, xs, ys, t_us, pol)
    # stable sort by image (radix sort for <= 16-bit keys); noise events are merged by a full sort
    if cfg.shot_noise_hz > 0:
        order = np.argsort(img_idx * (cfg.duration_us + 1) + t_us, kind="stable")
    elif n <= 65536:
        order = np.argsort(img_idx.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(img_idx, kind="stable")
    ev = np.empty(order.size, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = xs[order], ys[order], t_us[order], pol[order]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(img_idx, minlength=n), out=offsets[1:])
    if return_offsets:
        return ev, offsets
    return [ev[offsets[i] : offsets[i + 1]] for i in range(n)]


def _add_shot_noise(cfg, n, index_offset, img_idx, xs, ys, t_us, pol):
    sw, sh = cfg.sensor_size
    lam = cfg.shot_noise_hz * cfg.duration_us * 1e-6 * sw * sh
    parts = [[img_idx], [xs], [ys], [t_us], [pol]]
    for i in range(n):  # once per image: its own stream, so results do not depend on batching
        rng = np.random.default_rng([cfg.seed, index_offset + i])
        m = int(rng.poisson(lam))
        parts[0].append(np.full(m, i, np.int64))
        parts[1].append(rng.integers(0, sw, m))
        parts[2].append(rng.integers(0, sh, m))
        parts[3].append(rng.integers(0, cfg.duration_us, m))
        parts[4].append(rng.integers(0, 2, m).astype(np.uint8))
    return tuple(np.concatenate(p) for p in parts)


def emulate(image, config: EmulatorConfig | None = None, **overrides) -> np.ndarray:
    """Emulate one grayscale image ``[H, W]`` (uint8 or float 0..1): an event array sorted by t.

    Same as ``emulate_batch(image[None], ...)[0]``; see :class:`EmulatorConfig` for the parameters.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"emulate takes one [H, W] image, got shape {img.shape}; use emulate_batch")
    return emulate_batch(img[None], config, **overrides)[0]
