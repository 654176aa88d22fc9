from pathlib import Path

import numpy as np
import pytest
import torch

from spquant.data.detection import (
    Gen1DetectionFrames,
    MovingDigits,
    collate_detection,
    events_to_frames,
    render_digits,
    video_to_events,
)
from spquant.data.events import make_events
from spquant.data.readers.prophesee import BOX_DTYPE, write_gen1_boxes, write_prophesee_dat

SMALL = dict(num_samples=6, canvas=48, digits=(1, 2), T=3, steps=6)


def test_video_to_events_counts_and_timestamps():
    v = np.zeros((3, 1, 2))
    v[1, 0, 0] = 1.0  # on at frame 1, off again at frame 2
    ev = video_to_events(v, [0, 100, 200], threshold=0.6)
    # log(1.1) - log(0.1) = 2.398 -> 3 ON crossings in (0, 100], then 3 OFF in (100, 200]
    assert ev["p"].tolist() == [1, 1, 1, 0, 0, 0]
    assert np.all(ev["x"] == 0)
    # crossing k at level k*0.6 of the 2.398 rise: t = 100 * k * 0.6 / 2.398
    assert ev["t"][:3].tolist() == [int(np.floor(100 * k * 0.6 / np.log(11))) for k in (1, 2, 3)]
    assert np.all((ev["t"][3:] >= 100) & (ev["t"][3:] <= 200))


def test_events_to_frames_bins_and_channels():
    ev = make_events([0, 1, 2, 2], [0, 0, 1, 1], [0, 49, 50, 100], [0, 1, 1, 1])
    f = events_to_frames(ev, 2, (2, 3), 0, 100)
    assert f.shape == (2, 2, 2, 3)
    assert f[0, 0, 0, 0] == 1 and f[0, 1, 0, 1] == 1 and f[1, 1, 1, 2] == 2 and f.sum() == 4


def test_moving_digits_deterministic_and_cached(tmp_path):
    a = MovingDigits(cache_dir=tmp_path, **SMALL)
    files = list((tmp_path / "moving_digits").glob("*.npz"))
    assert len(files) == 1
    b = MovingDigits(cache_dir=tmp_path, **SMALL)  # loads the cache
    c = MovingDigits(cache_dir=None, **SMALL)  # regenerates
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][0], c[i][0])
        assert torch.equal(a[i][1], c[i][1])
    d = MovingDigits(cache_dir=tmp_path, **{**SMALL, "seed": 1})
    assert not torch.equal(a[0][0], d[0][0])
    assert len(list((tmp_path / "moving_digits").glob("*.npz"))) == 2
    # sample i does not depend on how many samples are made
    e = MovingDigits(cache_dir=None, **{**SMALL, "num_samples": 2})
    assert torch.equal(e[1][0], a[1][0])
    frames, boxes = collate_detection([a[0], a[1]])
    assert frames.shape == (3, 2, 2, 48, 48) and len(boxes) == 2


def test_moving_digits_boxes_are_exact():
    ds = MovingDigits(cache_dir=None, **{**SMALL, "digits": (1, 1)})
    images, labels = ds._digits()
    cfg = ds.config
    for i in range(len(ds)):
        rng = np.random.default_rng([cfg.seed, i, 0])
        n = int(rng.integers(1, 2))
        j = rng.integers(0, len(images), n)[0]
        _, boxes = ds[i]
        assert boxes.shape == (1, 5) and boxes[0, 4].item() == labels[j]
        x1, y1, x2, y2 = boxes[0, :4].double().tolist()
        # re-render the end frame: its nonzero pixels span exactly the box's pixel cover
        p0 = rng.uniform(0, cfg.canvas - 29, 2)
        ang, v = rng.uniform(0, 2 * np.pi), rng.uniform(*cfg.speed)
        p1 = np.clip(p0 + v * np.array([np.cos(ang), np.sin(ang)]), 0, cfg.canvas - 29)
        frame = render_digits([images[j] / 255.0], [p0], [p1], cfg.canvas, 1)[1]
        ys, xs = np.nonzero(frame > 1e-9)
        assert xs.min() == np.floor(x1) and xs.max() + 1 == np.ceil(x2)
        assert ys.min() == np.floor(y1) and ys.max() + 1 == np.ceil(y2)
        # the events lie in the region the digit swept
        ev = ds.events(i)
        assert ev.size > 0
        assert ev["x"].min() >= min(p0[0], p1[0]) - 1 and ev["x"].max() <= max(p0[0], p1[0]) + 29


def test_union_boxes_contain_end_boxes():
    end = MovingDigits(cache_dir=None, **SMALL)
    uni = MovingDigits(cache_dir=None, **{**SMALL, "box": "union"})
    for i in range(len(end)):
        be, bu = end[i][1], uni[i][1]
        assert torch.all(bu[:, :2] <= be[:, :2] + 1e-5) and torch.all(bu[:, 2:4] >= be[:, 2:4] - 1e-5)
        assert torch.equal(bu[:, 4], be[:, 4])


def _gen1_tree(tmp_path):
    d = tmp_path / "gen1" / "train"
    d.mkdir(parents=True)
    n = 2000
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 1_000_000, n))
    ev = make_events(rng.integers(0, 304, n), rng.integers(0, 240, n), t, rng.integers(0, 2, n))
    write_prophesee_dat(d / "rec_a_td.dat", ev, sensor_size=(304, 240))
    b = np.zeros(5, BOX_DTYPE)
    b["ts"] = [100_000, 600_000, 600_000, 600_000, 900_000]
    b["x"], b["y"] = [10, 10, 280, 50, 100], [10, 20, 200, 50, 100]
    b["w"], b["h"] = [40, 40, 40, 8, 60], [40, 30, 60, 40, 40]
    b["class_id"] = [0, 0, 1, 1, 1]
    write_gen1_boxes(d / "rec_a_bbox.npy", b)
    return tmp_path / "gen1", ev


def test_gen1_windows_boxes_and_filter(tmp_path):
    root, ev = _gen1_tree(tmp_path)
    ds = Gen1DetectionFrames(root, "train", events_per_window=100, T=2, input_size=(240, 304))
    # ts=100000 skipped (< 0.5 s); the 8x40 box dropped (side < 10)
    assert [ds.label_time(i) for i in range(len(ds))] == [600_000, 900_000]
    frames, boxes = ds[0]
    assert frames.shape == (2, 2, 240, 304) and frames.sum() == 100
    win = ds.window_events(0)
    assert win["t"].max() <= 600_000 and len(win) == 100
    assert win["t"][-1] == ev["t"][ev["t"] <= 600_000][-1]
    # boxes clipped to the sensor: 280+40 -> 304, 200+60 -> 240
    assert boxes.tolist() == [[10, 20, 50, 50, 0], [280, 200, 304, 240, 1]]
    # time windows and a down-scaled input
    ds2 = Gen1DetectionFrames(
        root, "train", events_per_window=None, window_us=50_000, T=1, input_size=(120, 152)
    )
    f2, b2 = ds2[1]
    in_win = ((ev["t"] > 850_000) & (ev["t"] <= 900_000)).sum()
    assert f2.shape == (1, 2, 120, 152) and f2.sum() == in_win
    assert b2.tolist() == [[50, 50, 80, 70, 1]]


def test_gen1_missing_data_is_an_error(tmp_path):
    from spquant.data.events import EventFileError

    with pytest.raises(EventFileError):
        Gen1DetectionFrames(tmp_path, "train")


def test_downsample_sums_blocks_and_scales_boxes():
    full = MovingDigits(cache_dir=None, **SMALL)
    half = MovingDigits(cache_dir=None, **{**SMALL, "downsample": 2})
    f, b = full[0]
    h, hb = half[0]
    assert h.shape == (3, 2, 24, 24)
    assert torch.equal(h, torch.clamp(f.reshape(3, 2, 24, 2, 24, 2).sum((3, 5)), max=255))
    assert torch.allclose(hb[:, :4] * 2, b[:, :4]) and torch.equal(hb[:, 4], b[:, 4])


def test_full_mnist_source_when_present():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
    if not root.is_dir():
        pytest.skip("full MNIST not at ../shared/data/mnist")
    ds = MovingDigits(cache_dir=None, source="mnist", mnist_root=str(root), **{**SMALL, "split": "test"})
    f, b = ds[0]
    assert f.shape == (3, 2, 48, 48) and b.shape[1] == 5 and f.sum() > 0


def test_benchmark_box_filters_at_their_boundaries():
    """The Prophesee toolbox rule: ts > 0.5 s, diag >= min_diag, both sides >= min_side; 1 Mpx keeps
    classes 0-2 (pedestrian, two-wheeler, car)."""
    from spquant.data.detection import BENCHMARKS, filter_boxes

    b = np.zeros(7, BOX_DTYPE)
    b["ts"] = [500_000, 500_001, 500_001, 500_001, 500_001, 500_001, 500_001]
    b["w"] = [40, 36, 20, 19, 57, 36, 36]
    b["h"] = [40, 48, 60, 60, 20, 47.9, 48]
    b["class_id"] = [0, 0, 2, 0, 1, 0, 3]
    one = BENCHMARKS["1mpx"]
    kept = filter_boxes(b, **{k: one[k] for k in ("min_diag", "min_side", "skip_us", "keep_classes")})
    # t = 0.5 s exactly: dropped; 36x48 (diag exactly 60): kept; 20x60 kept; 19x60 (side < 20) dropped;
    # 57x20 (diag 60.4) kept; 36x47.9 (diag < 60) dropped; class 3 (truck) dropped
    assert kept["w"].tolist() == [36, 20, 57] and kept["class_id"].tolist() == [0, 2, 1]
    g = BENCHMARKS["gen1"]
    assert filter_boxes(b, **{k: g[k] for k in ("min_diag", "min_side", "skip_us", "keep_classes")}).size == 6


def test_1mpx_frames_use_the_1mpx_sensor_classes_and_filter(tmp_path):
    d = tmp_path / "1mpx" / "val"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    n = 3000
    ev = make_events(
        rng.integers(0, 1280, n),
        rng.integers(0, 720, n),
        np.sort(rng.integers(0, 1_000_000, n)),
        rng.integers(0, 2, n),
    )
    write_prophesee_dat(d / "rec_td.dat", ev, sensor_size=(1280, 720))
    b = np.zeros(3, BOX_DTYPE)
    b["ts"] = 800_000
    b["x"], b["y"], b["w"], b["h"] = [100, 600, 1200], [100, 300, 700], [100, 30, 200], [50, 30, 100]
    b["class_id"] = [2, 0, 5]  # car kept; 30x30 pedestrian (diag 42 < 60) dropped; traffic sign dropped
    write_gen1_boxes(d / "rec_bbox.npy", b)
    ds = Gen1DetectionFrames(
        tmp_path / "1mpx",
        "val",
        benchmark="1mpx",
        events_per_window=None,
        window_us=50_000,
        T=2,
        input_size=(384, 640),
    )
    assert ds.num_classes == 3 and len(ds) == 1
    frames, boxes = ds[0]
    assert frames.shape == (2, 2, 384, 640)  # 1280x720 halved to 640x360, zero-padded to 384 rows
    assert frames[:, :, 360:].sum() == 0
    assert frames.sum() == ((ev["t"] > 750_000) & (ev["t"] <= 800_000)).sum()
    assert boxes.tolist() == [[50, 50, 100, 75, 2]]
    with pytest.raises(ValueError, match="benchmark"):
        Gen1DetectionFrames(tmp_path / "1mpx", "val", benchmark="gen2")


SHARED_EVENTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "events"


@pytest.mark.skipif(
    not (SHARED_EVENTS / "sample_ncars.dat").is_file(),
    reason="real Prophesee DAT sample not present (../shared/data/events/sample_ncars.dat)",
)
def test_smoke_real_dat_recording_through_the_gen1_pipeline(tmp_path):
    """A real Prophesee DAT v2 recording (N-CARS sample, the Gen1 container) with a box file written
    here: windows, frames and boxes come out consistent with the raw events."""
    import shutil

    from spquant.data.readers.prophesee import read_prophesee_dat

    d = tmp_path / "gen1" / "test"
    d.mkdir(parents=True)
    shutil.copy(SHARED_EVENTS / "sample_ncars.dat", d / "ncars_td.dat")
    ev = read_prophesee_dat(d / "ncars_td.dat").events
    b = np.zeros(2, BOX_DTYPE)
    b["ts"] = [int(ev["t"][len(ev) // 2]), int(ev["t"][-1])]
    b["x"], b["y"], b["w"], b["h"], b["class_id"] = 10, 5, 40, 30, [0, 1]
    write_gen1_boxes(d / "ncars_bbox.npy", b)
    ds = Gen1DetectionFrames(
        tmp_path / "gen1", "test", events_per_window=500, T=2, input_size=(240, 304), skip_us=0
    )
    assert len(ds) == 2
    for i, ts in enumerate(b["ts"]):
        frames, boxes = ds[i]
        assert frames.sum() == min(500, int((ev["t"] <= ts).sum()))
        assert boxes.tolist() == [[10, 5, 50, 35, i]]
        win = ds.window_events(i)
        assert win["t"].max() <= ts
