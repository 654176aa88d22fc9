"""The event-camera emulator: exact counts on hand-checkable scenes, determinism, options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spquant.data.emulator import EmulatorConfig, emulate, emulate_batch, saccade_path
from spquant.data.events import EVENT_DTYPE


def white_square():
    return np.full((28, 28), 255, np.uint8)


SLIDE = dict(
    n_saccades=1,
    saccade_base=4.0,
    saccade_height=0.0,
    profile="linear",
    threshold_sigma=0.0,
    blur_sigma=0.0,
    threshold_on=0.32,
    threshold_off=0.32,
)


def test_saccade_path_triangle():
    cfg = EmulatorConfig(duration_us=300_000, dt_us=1000)
    p = saccade_path(cfg)
    assert p.shape == (301, 2)
    np.testing.assert_allclose(p[0], [-2.5, -2.5])
    np.testing.assert_allclose(p[100], [0, 2.5])  # first saccade: down (image y grows downwards)
    np.testing.assert_allclose(p[200], [2.5, -2.5])  # second: up and right
    np.testing.assert_allclose(p[300], [-2.5, -2.5])  # third: left, back to the start
    assert np.hypot(*(p[100] - p[0])) == pytest.approx(np.hypot(*(p[200] - p[100])))  # isosceles
    # cosine profile: the image rests at every vertex and moves fastest mid-saccade
    speed = np.hypot(*np.diff(p, axis=0).T)
    assert speed[0] < 0.05 * speed[50] and speed[99] < 0.05 * speed[50]


def test_sliding_edge_exact_counts():
    """A white square slides right by 4 px (one linear saccade along the base, no blur, no threshold
    mismatch): a pixel that goes black -> white crosses
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


def test_blur_spreads_an_edge():
    sharp = emulate(white_square(), **SLIDE)
    blurred = emulate(white_square(), **{**SLIDE, "blur_sigma": 1.0})
    # a blurred edge spreads its crossings over more pixels (columns) than a sharp one
    assert np.unique(blurred["x"]).size > np.unique(sharp["x"]).size


def test_invert_polarity():
    a = emulate(white_square(), **SLIDE)
    b = emulate(white_square(), invert_polarity=True, **SLIDE)
    np.testing.assert_array_equal(a[["x", "y", "t"]], b[["x", "y", "t"]])
    assert np.all(a["p"] == 1 - b["p"])


def test_motion_and_polarity_match_real_nmnist(shared_events):
    """Cross-correlating event maps gives the image motion of each saccade; ON events then lead
    (physical default) or trail (invert_polarity, N-MNIST's sign) the motion, as in the real file."""
    import spquant.data as sd

    real = sd.read_atis_bin(shared_events / "sample_nmnist.bin").events
    x, y = sd.load_embedded_mnist()[2:]
    emu = emulate(x[np.flatnonzero(y == 4)[0]], invert_polarity=True)

    def shift(ev, a, b, c, d):
        def m(lo, hi):
            s = ev[(ev["t"] >= lo * 1000) & (ev["t"] < hi * 1000)]
            im = np.zeros((34, 34))
            np.add.at(im, (s["y"], s["x"]), 1)
            return im

        A, B = m(a, b), m(c, d)
        scores = {
            (dx, dy): (np.roll(A, (dy, dx), (0, 1)) * B).sum() for dx in range(-5, 6) for dy in range(-5, 6)
        }
        return np.array(max(scores, key=scores.get))

    def on_minus_off(ev, lo, hi):
        s = ev[(ev["t"] >= lo * 1000) & (ev["t"] < hi * 1000)]
        on, off = s[s["p"] == 1], s[s["p"] == 0]
        return np.array([on["x"].mean() - off["x"].mean(), on["y"].mean() - off["y"].mean()])

    for a, b, c, d in [(10, 40, 60, 90), (110, 140, 160, 190), (210, 240, 260, 290)]:
        sr, se = shift(real, a, b, c, d), shift(emu, a, b, c, d)
        assert np.all(np.sign(sr) == np.sign(se)), (a, sr, se)  # same direction of motion
        pr, pe = on_minus_off(real, a, d), on_minus_off(emu, a, d)
        big = np.abs(pr) > 1
        assert np.all(np.sign(pr[big]) == np.sign(pe[big])), (a, pr, pe)


def test_blank_image_no_events_and_dtype():
    ev = emulate(np.zeros((28, 28), np.uint8))
    assert ev.dtype == EVENT_DTYPE and ev.size == 0


def test_batch_equals_single_and_deterministic(rng):
    from spquant.data.embedded import load_embedded_mnist

    imgs = load_embedded_mnist()[0][10:13]
    batch = emulate_batch(imgs)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], emulate(imgs[i]))
    ev, off = emulate_batch(imgs, return_offsets=True)
    assert off.tolist() == np.cumsum([0] + [b.size for b in batch]).tolist()
    np.testing.assert_array_equal(ev[off[1] : off[2]], batch[1])
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
        t = ev["t"][off[i] : off[i + 1]]
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
    np.testing.assert_array_equal(a[off[1] : off[2]], b[1])
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


def test_emulator_is_vectorised_over_images():
    # Counted, not timed: 10x the images must not run 10x the Python lines.
    from spquant.data.embedded import load_embedded_mnist

    from .helpers import python_lines_run

    x = load_embedded_mnist()[0]
    small, _ = python_lines_run(emulate_batch, x[:4])
    large, _ = python_lines_run(emulate_batch, x[:40])
    assert large < 2 * small + 100, (small, large)
