"""Emulated-event cache and mnist_frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spquant.data as sd
from spquant.data.emulated import pack_events, unpack_events

from .helpers import random_events


def test_pack_round_trip(rng):
    ev = random_events(rng, 1000, 34, 34, t_max=2**19)
    np.testing.assert_array_equal(unpack_events(pack_events(ev)), ev)


def test_emulate_to_cache_and_dataset(tmp_path):
    x = sd.load_embedded_mnist()[0][:5]
    y = np.arange(5)
    out = sd.emulate_to_cache(x, y, tmp_path / "c", "train", workers=1, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["packed_uint32"] and meta["splits"]["train"]["n_samples"] == 5
    ds = sd.EmulatedEvents(out, "train", transform=sd.ToFrames(4, (34, 34)))
    f, lab = ds[3]
    assert f.shape == (4, 3, 34, 34) and lab == 3
    ref = sd.emulate_batch(x)
    for i in range(5):
        np.testing.assert_array_equal(ds.events_of(i), ref[i])
    ev, off = ds.all_events(1, 3)
    np.testing.assert_array_equal(ev[off[1] : off[2]], ref[2])
    with pytest.raises(sd.EventFileError, match="no complete emulated 'test' split"):
        sd.EmulatedEvents(out, "test")


def test_unpacked_cache_for_large_sensors(tmp_path):
    cfg = sd.EmulatorConfig(sensor_size=(70, 40))
    x = np.zeros((2, 28, 28), np.uint8)
    x[:, 5:20, 5:9] = 255
    out = sd.emulate_to_cache(x, [0, 1], tmp_path, "test", cfg, workers=1, progress=False)
    ds = sd.EmulatedEvents(out, "test")
    assert not ds.packed and ds.sensor_size == (70, 40)
    np.testing.assert_array_equal(ds.events_of(1), sd.emulate(x[1], cfg))


def test_emulated_mnist_caches_by_parameters(tmp_path, monkeypatch):
    from spquant.data import emulated

    calls = []
    real = emulated.emulate_to_cache
    monkeypatch.setattr(emulated, "emulate_to_cache", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(
        emulated,
        "_mnist_source",
        lambda split, source: (sd.load_embedded_mnist()[2][:4], sd.load_embedded_mnist()[3][:4], "tiny"),
    )
    a = sd.EmulatedMNIST("test", cache_dir=tmp_path, progress=False, workers=1)
    b = sd.EmulatedMNIST("test", cache_dir=tmp_path, progress=False, workers=1)
    assert len(calls) == 1 and a.dir == b.dir  # second use reads the cache
    c = sd.EmulatedMNIST(
        "test", cache_dir=tmp_path, config=sd.EmulatorConfig(threshold_on=0.5), progress=False, workers=1
    )
    assert len(calls) == 2 and c.dir != a.dir


def test_mnist_frames_direct_and_events(tmp_path):
    x, y = sd.mnist_frames("test", T=4, encoding="direct")
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.uint8 and y.shape == (1000,)
    xr, _ = sd.mnist_frames("test", T=4, encoding="direct", size=(48, 48), limit=3)
    assert xr.shape == (3, 1, 48, 48) and xr.dtype == torch.float16
    fe, ye = sd.mnist_frames("test", T=5, encoding="events", cache_dir=tmp_path, limit=6, workers=1)
    assert fe.shape == (6, 5, 3, 34, 34) and fe.dtype == torch.uint8
    assert set(fe.unique().tolist()) == {0, 1} and fe[:, :, 2].sum() == 0
    assert ye.tolist() == y[:6].tolist()
    ds = sd.EmulatedMNIST("test", cache_dir=tmp_path, progress=False, limit=6)
    assert len(ds) == 6 and ds.dir.name.endswith("-first6")
    assert (ds.dir / "test_frames_T5_polarity3.npy").is_file()  # frames cached next to the events
    again, _ = sd.mnist_frames("test", T=5, encoding="events", cache_dir=tmp_path, limit=6)
    assert torch.equal(again, fe)
    np.testing.assert_array_equal(fe[4].numpy(), sd.to_frames(ds.events_of(4), (34, 34), 5).astype(np.uint8))
    fc, _ = sd.mnist_frames(
        "test", T=5, encoding="events", cache_dir=tmp_path, limit=2, mode="count2", size=(48, 48)
    )
    assert fc.shape == (2, 5, 2, 48, 48) and fc.dtype == torch.float16


def test_mnist_frames_full_source(shared_mnist, monkeypatch, tmp_path):
    monkeypatch.setenv("SPQUANT_DATA", str(shared_mnist.parent))
    x, y = sd.mnist_frames("train", T=2, source="full", encoding="direct")
    assert x.shape == (60000, 1, 28, 28) and y[:3].tolist() == [5, 0, 4]
    x2, _ = sd.mnist_frames("test", source=shared_mnist, encoding="direct", limit=10)
    assert x2.shape == (10, 1, 28, 28)
