"""Transforms against hand-computed tiny examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.data.events import make_events
from spquant.data.transforms import (
    Compose,
    DirectEncode,
    RandomCrop,
    RandomFlip,
    Resize,
    ToFrames,
    direct_encode,
    random_crop,
    random_flip,
    resize,
    time_bin_index,
    to_frames,
    to_frames_batch,
)

from .helpers import random_events


def test_time_bins_equal_split():
    # span 0..9 -> 10 us, 2 bins of 5 us
    assert time_bin_index(np.array([0, 4, 5, 9]), 2).tolist() == [0, 0, 1, 1]
    assert time_bin_index(np.array([10, 12, 40]), 3, t_start=10, t_end=39).tolist() == [0, 0, -1]


def test_polarity3_latest_event_wins():
    # pixel (0,0): ON then OFF in bin 0 -> green only; pixel (1,0): OFF then ON -> red only
    ev = make_events(x=[0, 1, 0, 1, 1], y=[0, 0, 0, 0, 0], t=[0, 1, 2, 3, 9], p=[1, 0, 0, 1, 0])
    f = to_frames(ev, (2, 1), n_time_bins=2, mode="polarity3")
    assert f.shape == (2, 3, 1, 2) and f.dtype == np.float32
    expect = np.zeros((2, 3, 1, 2), np.float32)
    expect[0, 1, 0, 0] = 1  # (0,0) latest OFF -> green
    expect[0, 0, 0, 1] = 1  # (1,0) latest in bin 0 is ON (t=3) -> red
    expect[1, 1, 0, 1] = 1  # (1,0) in bin 1: OFF (t=9) -> green
    np.testing.assert_array_equal(f, expect)
    assert np.all(f[:, 2] == 0)


def test_count2_histogram():
    ev = make_events(x=[0, 0, 0, 1], y=[1, 1, 1, 0], t=[0, 1, 2, 3], p=[1, 1, 0, 0])
    f = to_frames(ev, (2, 2, 2), n_time_bins=1, mode="count2")
    expect = np.zeros((1, 2, 2, 2), np.float32)
    expect[0, 1, 1, 0] = 2  # two ON at (x0,y1)
    expect[0, 0, 1, 0] = 1  # one OFF at (x0,y1)
    expect[0, 0, 0, 1] = 1  # one OFF at (x1,y0)
    np.testing.assert_array_equal(f, expect)
    assert f.sum() == 4


def test_to_frames_errors_and_empty():
    ev = make_events([5], [0], [0], [1])
    with pytest.raises(ValueError, match="outside the sensor 2x2"):
        to_frames(ev, (2, 2), 1)
    with pytest.raises(ValueError, match="mode"):
        to_frames(ev, (8, 8), 1, mode="rgb")
    assert to_frames(ev[:0], (3, 2), 4).shape == (4, 3, 2, 3)


@pytest.mark.parametrize("mode", ["polarity3", "count2"])
def test_to_frames_batch_matches_single(rng, mode):
    samples = [random_events(rng, n, 6, 5, t_max=1000) for n in (30, 0, 1, 50)]
    ev = np.concatenate(samples)
    off = np.concatenate([[0], np.cumsum([s.size for s in samples])])
    fb = to_frames_batch(ev, off, (6, 5), 3, mode)
    assert fb.shape == (4, 3, 3 if mode == "polarity3" else 2, 5, 6) and fb.dtype == np.uint8
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(fb[i], to_frames(s, (6, 5), 3, mode))


def test_to_frames_dataclass():
    ev = make_events([0, 1], [0, 1], [0, 10], [1, 0])
    out = ToFrames(n_time_bins=2, sensor_size=(2, 2, 2), mode="count2")(ev)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 2, 2, 2)
    assert out[0, 1, 0, 0] == 1 and out[1, 0, 1, 1] == 1 and out.sum() == 2


def test_resize_area_and_bilinear():
    f = torch.zeros(2, 1, 4, 4)
    f[:, 0, :2, :2] = 1.0
    out = resize(f, (2, 2))  # area: mean of 2x2 blocks
    assert out.shape == (2, 1, 2, 2)
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    f2 = torch.zeros(1, 1, 2, 2)
    f2[0, 0, 0, 0] = 4.0
    assert resize(f2, (1, 1))[0, 0, 0, 0] == 1.0
    up = Resize((4, 4), mode="bilinear")(torch.arange(4.0).reshape(1, 1, 2, 2))
    assert up.shape == (1, 1, 4, 4) and up[0, 0, 0, 0] == 0.0 and up[0, 0, -1, -1] == 3.0
    assert Resize()(torch.zeros(3, 2, 34, 34)).shape == (3, 2, 48, 48)
    assert resize(np.ones((5, 1, 2, 10, 10), np.float32), (5, 5)).shape == (5, 1, 2, 5, 5)


def test_random_crop_and_flip_are_seeded():
    f = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    a = random_crop(f, (2, 2), generator=torch.Generator().manual_seed(3))
    b = random_crop(f, (2, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 1, 2, 2)
    # the crop is a contiguous window of the original, the same for both time steps
    i, j = divmod(int(a[0, 0, 0, 0]), 4)
    assert torch.equal(a, f[..., i : i + 2, j : j + 2])
    padded = random_crop(f, (6, 6), padding=1)
    assert padded.shape == (2, 1, 6, 6) and padded[..., 0, :].abs().sum() == 0
    with pytest.raises(ValueError, match="larger"):
        random_crop(f, (5, 5))
    assert torch.equal(random_flip(f, p=1.0), f.flip(-1))
    assert torch.equal(random_flip(f, p=1.0, horizontal=False), f.flip(-2))
    assert torch.equal(random_flip(f, p=0.0), f)
    flips = [bool(torch.equal(RandomFlip(seed=s)(f), f.flip(-1))) for s in range(20)]
    assert 0 < sum(flips) < 20
    rc = RandomCrop((2, 2), seed=1)
    outs = {tuple(rc(f)[0, 0, 0].tolist()) for _ in range(10)}
    assert len(outs) > 1  # one generator drawn repeatedly: crops vary between calls
    assert torch.equal(RandomCrop((2, 2), seed=1)(f), RandomCrop((2, 2), seed=1)(f))


def test_direct_encode_and_compose():
    img = np.array([[0, 255], [51, 0]], np.uint8)
    out = direct_encode(img, 3)
    assert out.shape == (3, 1, 2, 2) and out.dtype == torch.float32
    assert torch.allclose(out[2, 0], torch.tensor([[0.0, 1.0], [0.2, 0.0]]))
    rgb = torch.ones(3, 4, 4)
    assert DirectEncode(2)(rgb).shape == (2, 3, 4, 4)
    pipe = Compose([DirectEncode(2), Resize((1, 1))])
    assert torch.allclose(pipe(img), torch.full((2, 1, 1, 1), (1 + 0.2) / 4))
    ev = make_events([0, 1], [0, 1], [0, 10], [1, 0])
    pipe2 = Compose([ToFrames(2, (2, 2)), Resize((4, 4), mode="nearest")])
    assert pipe2(ev).shape == (2, 3, 4, 4)
