"""Detection adapters (frames + boxes) over the Gen1 and 1-Megapixel layouts, written by fake_layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spquant.data as sd

from . import fake_layouts as fake


def test_megapixel_type12_frames_and_boxes(tmp_path):
    root = fake.write_prophesee_detection(
        tmp_path / "1mpx", sensor=(1280, 720), event_type=12, recordings=1, events=30_000, classes=7
    )
    raw = sd.Megapixel1Detection(root, "val", window_events=5000)
    ev, boxes = raw[0]
    assert ev.size == 5000 and int(ev["x"].max()) < 1280 and int(ev["y"].max()) < 720
    assert ev["t"].max() <= boxes["ts"][0]
    ds = sd.Gen1DetectionFrames(
        root, "val", events_per_window=5000, T=2, input_size=(360, 640), benchmark="1mpx"
    )
    assert isinstance(ds.raw, sd.Megapixel1Detection) and len(ds) >= 1
    frames, b = ds[0]
    assert frames.shape == (2, 2, 360, 640)  # half resolution
    assert float(frames.sum()) == 5000.0  # every event of the window counted once
    assert b.shape[1] == 5 and b.shape[0] >= 1
    assert (
        torch.all(b[:, 2] <= 640) and torch.all(b[:, 3] <= 360) and torch.all(b[:, 4] < 3)
    )  # 3 classes kept


def test_gen1_adapter_still_reads_type0(tmp_path):
    root = fake.write_prophesee_detection(tmp_path / "gen1", recordings=1, events=8000)
    ds = sd.Gen1DetectionFrames(root, "test", events_per_window=2000, T=1)
    frames, b = ds[0]
    assert frames.shape == (1, 2, 240, 304) and float(frames.sum()) == 2000.0
    with pytest.raises(sd.EventFileError, match=r"1Mpx recordings.*fetch 1mpx"):
        sd.Megapixel1Detection(tmp_path / "nothing", "train")


def test_megapixel_refuses_events_outside_its_sensor(tmp_path):
    root = fake.write_prophesee_detection(
        tmp_path / "x", sensor=(1280, 720), event_type=12, recordings=1, events=1000
    )
    ev = sd.read_prophesee_dat(root / "train" / "rec_train_0_td.dat").events
    ev["x"][np.searchsorted(ev["t"], 550_000, side="right") - 1] = 1500  # inside the first window
    sd.write_prophesee_dat(root / "train" / "rec_train_0_td.dat", ev, sensor_size=(2048, 720), event_type=12)
    ds = sd.Megapixel1Detection(root, "train", window_events=100)
    with pytest.raises(
        sd.EventFileError, match=r"rec_train_0_td\.dat.*outside the declared sensor size 1280x720"
    ):
        ds[0]
    assert np.all(sd.read_prophesee_dat(root / "train" / "rec_train_0_td.dat").events["x"] < 2048)
