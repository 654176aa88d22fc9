"""The event-camera emulator: exact counts on hand-checkable scenes, determinism, options."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from spquant.data.emulator import EmulatorConfig, emulate, emulate_batch, saccade_path
from spquant.data.events import EVENT_DTYPE


def white_square():
    return np.full((28, 28), 255, np.uint8)


SLIDE = dict(n_saccades=1, saccade_base=4.0, saccade_height=0.0, profile="linear", threshold_sigma=0.0)


def test_saccade_path_triangle():
    cfg = EmulatorConfig(duration_us=300_000, dt_us=1000)
    p = saccade_path(cfg)
    assert p.shape == (301, 2)
    np.testing.assert_allclose(p[0], [-2, 2])
    np.testing.assert_allclose(p[100], [2, 2])
    np.testing.assert_allclose(p[200], [0, -2])
    np.testing.assert_allclose(p[300], [-2, 2])  # back to the start: a closed triangle
    side = np.hypot(2, 4)
    assert np.hypot(*(p[200] - p[100])) == pytest.approx(side)  # isosceles: two equal sides


def test_sliding_edge_exact_counts():
    """A white square slides right by 4 px: a pixel that goes black -> white crosses
    floor(log((1 + eps) / eps) / C) ON thresholds, white -> black as many OFF ones."""
    ev = emulate(white_square(), **SLIDE)
    cfg = EmulatorConfig(**SLIDE)
    n_expected = math.floor(math.log((1 + cfg.log_eps) / cfg.log_eps) / cfg.threshold_on)
    assert n_expected == 7
    rows = (ev["y"] >= 3) & (ev["y"] < 31)
    assert np.all(rows)  # no vertical motion: only the square's rows see changes
    for x, pol in [(29, 1), (30, 1), (1, 0), (2, 0)]:
        sel = ev[ev["x"] == x]
        assert sel.size == 28 * n_expected, x
        assert np.all(sel["p"] == pol)
    assert np.sum(ev["x"] == 15) == 0  # inside the square nothing changes
    # the edge passes pixel 29 before pixel 30
    assert ev["t"][ev["x"] == 29].mean() < ev["t"][ev["x"] == 30].mean()
    assert ev["t"].min() >= 0 and ev["t"].max() <= cfg.duration_us
    assert np.all(np.diff(ev["t"]) >= 0)


def test_blank_image_no_events_and_dtype():
    ev = emulate(np.zeros((28, 28), np.uint8))
    assert ev.dtype == EVENT_DTYPE and ev.size == 0


def test_batch_equals_single_and_deterministic(rng):
    imgs = (rng.random((3, 28, 28)) * 255).astype(np.uint8)
    batch = emulate_batch(imgs)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], emulate(imgs[i]))
    ev, off = emulate_batch(imgs, return_offsets=True)
    assert off.tolist() == np.cumsum([0] + [b.size for b in batch]).tolist()
    np.testing.assert_array_equal(ev[off[1]:off[2]], batch[1])
    other = emulate(imgs[0], seed=1)  # another sensor (threshold mismatch)
    assert other.size != batch[0].size or not np.array_equal(other, batch[0])


def test_real_digit_statistics():
    from spquant.data.embedded import load_embedded_mnist
    x = load_embedded_mnist()[0][:20]
    ev, off = emulate_batch(x, return_offsets=True)
    counts = np.diff(off)
    assert 2000 < counts.mean() < 7000  # same range as a real N-MNIST recording (4,325 events)
    assert ev["x"].max() < 34 and ev["y"].max() < 34
    assert 0.4 < ev["p"].mean() < 0.6  # closed path: ON and OFF balance
    # events in every third of the recording (three saccades)
    for i in range(20):
        t = ev["t"][off[i]:off[i + 1]]
        assert np.histogram(t, bins=3, range=(0, 300_000))[0].min() > 0.1 * t.size


def test_refractory_period_limits_rate():
    base = emulate(white_square(), **SLIDE)
    ev = emulate(white_square(), refractory_us=10**9, **SLIDE)
    pix = ev["y"].astype(int) * 34 + ev["x"]
    assert np.bincount(pix).max() == 1  # at most one event per pixel
    assert 0 < ev.size < base.size
    ev2 = emulate(white_square(), refractory_us=5000, **SLIDE)
    for p in np.unique(pix):
        t = ev2["t"][(ev2["y"].astype(int) * 34 + ev2["x"]) == p]
        assert np.all(np.diff(t) >= 5000 - 1)


def test_shot_noise():
    blank = np.zeros((2, 28, 28), np.uint8)
    a, off = emulate_batch(blank, shot_noise_hz=10.0, return_offsets=True)
    lam = 10.0 * 0.3 * 34 * 34
    assert abs(np.diff(off).mean() - lam) < 4 * math.sqrt(lam)
    b = emulate_batch(blank, shot_noise_hz=10.0)
    np.testing.assert_array_equal(a[off[1]:off[2]], b[1])
    # noise streams are per image index, independent of batching
    c = emulate_batch(blank[:1], shot_noise_hz=10.0, index_offset=1)
    np.testing.assert_array_equal(c[0], b[1])


def test_time_step_barely_changes_counts():
    from spquant.data.embedded import load_embedded_mnist
    x = load_embedded_mnist()[0][:10]
    c1 = np.diff(emulate_batch(x, dt_us=1000, return_offsets=True)[1]).sum()
    c2 = np.diff(emulate_batch(x, dt_us=2000, return_offsets=True)[1]).sum()
    assert abs(c1 - c2) / c1 < 0.02


def test_bad_inputs():
    with pytest.raises(ValueError, match="larger than the sensor"):
        emulate(np.zeros((40, 40)))
    with pytest.raises(ValueError, match="use emulate_batch"):
        emulate(np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="profile"):
        emulate(white_square(), profile="zigzag")


def test_vectorised_speed():
    from spquant.data.embedded import load_embedded_mnist
    x = load_embedded_mnist()[0][:200]
    t0 = time.perf_counter()
    emulate_batch(x)
    assert (time.perf_counter() - t0) / 200 < 0.05  # measured ~4 ms/image on one core
