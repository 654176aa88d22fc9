"""The on-disk frame cache: every classification data set in its public layout -> prepare -> stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spquant.data as sd
from spquant.data import prepare as pp
from spquant.data.prepare import FrameDataset, FrameSpec, frame_loader, prepare

from . import fake_layouts as fake


def _prep(dataset, root, tmp_path, workers=0, **spec):
    return prepare(dataset, root, FrameSpec(**spec), tmp_path / "cache", workers=workers, progress=False)


def test_nmnist_cache_matches_direct_binning(tmp_path):
    root = fake.write_nmnist(tmp_path / "nmnist")
    cache = _prep("nmnist", root, tmp_path, T=4, polarity="count2")
    assert cache.index["complete"] and cache.index["splits"]["train"]["shape"] == [20, 4, 2, 34, 34]
    assert cache.index["splits"]["train"]["dtype"] == "|u1"  # integer counts kept
    src = sd.NMNIST(root, "train")
    ds = FrameDataset(cache, "train")
    for i in (0, 7, 19):
        x, y = ds[i]
        ev, label = src[i]
        assert y == label
        np.testing.assert_array_equal(x.numpy(), sd.to_frames(ev, (34, 34), 4, "count2"))
    assert float(ds[3][0].sum()) == 300.0  # every event counted once


def test_count_bins_and_polarity3(tmp_path):
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=1)
    cache = _prep("nmnist", root, tmp_path, T=3, bins="count", polarity="polarity3")
    ds, src = FrameDataset(cache, "test"), sd.NMNIST(root, "test")
    x, _ = ds[2]
    ev = src[2][0]
    np.testing.assert_array_equal(x.numpy(), sd.to_frames(ev, (34, 34), 3, "polarity3", bins="count"))
    assert set(np.unique(x.numpy())) <= {0.0, 1.0} and float(x[:, 2].sum()) == 0.0


def test_count_bins_equal_spikingjelly_split_by_number():
    from spquant.data.transforms import count_bin_index

    assert count_bin_index(10, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # remainder to the last bin
    assert count_bin_index(2, 4).tolist() == [0, 1]


@pytest.mark.parametrize("layout", ["aedat2", "npz"])
def test_cifar10dvs_layouts_give_the_same_frames(tmp_path, layout):
    """The original AEDAT 2.0 files and SpikingJelly's npz copy of the same recordings -> identical frames."""
    fake.write_cifar10dvs(tmp_path / "a2", "aedat2", per_class=2, events=400, seed=3)
    # SpikingJelly's conversion of those files: x = 127 - y_raw, y = 127 - x_raw, p = 1 - p_raw
    if layout == "npz":
        for c in fake.CIFAR10_CLASSES:
            (tmp_path / "sj" / "events_np" / c).mkdir(parents=True)
            for f in sorted((tmp_path / "a2" / c).glob("*.aedat")):
                raw = sd.read_aedat2(f).events
                np.savez(
                    tmp_path / "sj" / "events_np" / c / (f.stem + ".npz"),
                    t=raw["t"],
                    x=127 - raw["y"].astype(int),
                    y=127 - raw["x"].astype(int),
                    p=1 - raw["p"].astype(int),
                )
    root = tmp_path / ("a2" if layout == "aedat2" else "sj")
    spec = dict(T=5, polarity="polarity3", size=(48, 48), fit="resize")
    cache = _prep("cifar10-dvs", root, tmp_path, **spec)
    assert cache.index["splits"]["train"]["shape"] == [18, 5, 3, 48, 48]  # the authors' random 90/10
    assert cache.index["splits"]["train"]["dtype"] == "<f2"  # resized: fractional
    ref = _prep("cifar10-dvs", tmp_path / "a2", tmp_path / "ref", **spec)
    a, b = FrameDataset(cache, "test"), FrameDataset(ref, "test")
    for i in range(len(a)):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
        assert a[i][1] == b[i][1]


def test_integer_refuses_resize_and_crop_keeps_counts(tmp_path):
    root = fake.write_cifar10dvs(tmp_path / "c", per_class=1, events=300)
    with pytest.raises(ValueError, match="integer frames cannot be resized.*not a whole shrink factor"):
        _prep("cifar10-dvs", root, tmp_path, T=2, polarity="count2", size=(48, 48), integer=True)
    pooled = _prep("cifar10-dvs", root, tmp_path, T=2, polarity="count2", size=(32, 64), integer=True)
    assert pooled.index["splits"]["train"]["dtype"] == "|u1"
    x, _ = FrameDataset(pooled, "train")[0]
    ev = sd.CIFAR10DVS(root, "train")[0][0]
    full = torch.from_numpy(sd.to_frames(ev, (128, 128), 2, "count2"))
    torch.testing.assert_close(x, full.reshape(2, 2, 32, 4, 64, 2).sum((3, 5)))  # 4x2 sum pooling
    assert float(x.sum()) == 300.0  # every event kept
    cache = _prep(
        "cifar10-dvs", root, tmp_path, T=2, polarity="count2", size=(120, 120), fit="crop", integer=True
    )
    x, _ = FrameDataset(cache, "train")[0]
    assert x.shape == (2, 2, 120, 120) and torch.equal(x, x.round())


def test_dvs128_gesture_segments_and_user_split(tmp_path):
    root = fake.write_dvs128_gesture(tmp_path / "g")
    cache = _prep("dvs128-gesture", root, tmp_path, T=4, polarity="count2", size=(32, 32), fit="resize")
    tr, te = FrameDataset(cache, "train"), FrameDataset(cache, "test")
    assert len(tr) == 22 and len(te) == 11  # 11 gestures per trial; users 1, 2 train, 24 test
    assert sorted({tr[i][1] for i in range(len(tr))}) == list(range(11))
    seg, lab = sd.DVSGesture(root, "test")[5]
    expected = sd.transforms.fit_frames(
        torch.from_numpy(sd.to_frames(seg, (128, 128), 4, "count2")), (32, 32)
    )
    torch.testing.assert_close(te[5][0], expected.to(torch.float16).float())
    assert te[5][1] == lab == 5


def test_ncaltech101_and_cifar10_static(tmp_path):
    root = fake.write_ncaltech101(tmp_path / "n")
    cache = _prep("ncaltech101", root, tmp_path, T=2, polarity="polarity3", size=(48, 64))
    assert cache.index["splits"]["train"]["shape"][0] == 17 and cache.index["splits"]["test"]["shape"][0] == 4
    assert cache.index["classes"] == ["accordion", "airplanes", "anchor"]
    croot = fake.write_cifar10(tmp_path / "cifar10")
    c = _prep("cifar10", croot, tmp_path, size=(32, 32))
    assert c.index["static"] and c.index["splits"]["train"]["shape"] == [30, 3, 32, 32]
    ds = FrameDataset(c, "test", T=2)
    x, y = ds[1]
    img, label = sd.CIFAR10(croot, "test")[1]
    assert x.shape == (2, 3, 32, 32) and y == label
    torch.testing.assert_close(x[1], torch.from_numpy(img).float() / 255)


def test_resume_after_interruption(tmp_path, monkeypatch):
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=14)  # 140 samples: 3 shards of 64
    spec = FrameSpec(T=2, polarity="count2")
    calls = {"n": 0}
    real = pp.make_frames

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 100:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pp, "make_frames", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare("nmnist", root, spec, tmp_path / "cache", splits=("train",), workers=0, progress=False)
    (out,) = (tmp_path / "cache").iterdir()
    assert not (out / "index.json").exists()  # unfinished: no index
    assert sorted(p.name for p in (out / "train.done").iterdir()) == ["00000"]
    monkeypatch.setattr(pp, "make_frames", real)
    cache = prepare("nmnist", root, spec, tmp_path / "cache", splits=("train",), workers=0, progress=False)
    assert cache.index["splits"]["train"]["made"] == 140 - 64  # only the unfinished shards
    fresh = prepare("nmnist", root, spec, tmp_path / "fresh", splits=("train",), workers=0, progress=False)
    a = np.load(cache.path / "train.frames.npy")
    b = np.load(fresh.path / "train.frames.npy")
    np.testing.assert_array_equal(a, b)
    again = prepare("nmnist", root, spec, tmp_path / "cache", splits=("train",), workers=0, progress=False)
    assert again.path == cache.path and json.loads((cache.path / "index.json").read_text())["complete"]


def test_worker_processes_match_in_process(tmp_path):
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=7)
    spec = FrameSpec(T=3, polarity="polarity3", size=(32, 32), fit="crop")
    one = prepare("nmnist", root, spec, tmp_path / "one", splits=("test",), workers=0, progress=False)
    two = prepare("nmnist", root, spec, tmp_path / "two", splits=("test",), workers=2, progress=False)
    np.testing.assert_array_equal(
        np.load(one.path / "test.frames.npy"), np.load(two.path / "test.frames.npy")
    )


def test_settings_change_the_key(tmp_path):
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=1)
    a = _prep("nmnist", root, tmp_path, T=2, polarity="count2")
    b = _prep("nmnist", root, tmp_path, T=3, polarity="count2")
    c = _prep(
        "nmnist", root, tmp_path, T=2, polarity="count2", augment="flip+roll"
    )  # augmentation: same cache
    assert a.path != b.path and a.path == c.path


def test_loader_streams_batches_with_workers_and_augmentation(tmp_path):
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=3)
    cache = _prep("nmnist", root, tmp_path, T=2, polarity="count2")
    ds = FrameDataset(cache, "train", augment="nda")
    xs = [x for x, _ in frame_loader(ds, batch_size=8, shuffle=True, workers=2, seed=1)]
    assert [tuple(x.shape) for x in xs] == [(2, 8, 2, 34, 34)] * 3 + [(2, 6, 2, 34, 34)]
    assert all(torch.equal(x, x.round()) for x in xs)  # nearest warps keep integer counts
    again = [x for x, _ in frame_loader(ds, batch_size=8, shuffle=True, workers=2, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(xs, again))  # seeded: the same draws


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no frame adapter for data set 'imagenet'"):
        _prep("imagenet", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="bins must be"):
        FrameSpec(bins="space")
    with pytest.raises(ValueError, match="unknown augmentation 'spin'"):
        FrameSpec(augment="flip+spin")
    with pytest.raises(sd.EventFileError, match="not a finished frame cache"):
        FrameDataset(tmp_path, "train")
    root = fake.write_nmnist(tmp_path / "nmnist", per_class=1)
    cache = _prep("nmnist", root, tmp_path, T=2, polarity="count2")
    with pytest.raises(ValueError, match="T=2 frames per sample, asked for T=5"):
        FrameDataset(cache, "train", T=5)


def test_cli_prepare_recipe(tmp_path, capsys):
    from spquant.cli import main

    root = fake.write_dvs128_gesture(tmp_path / "g", users=(1, 24), events=2000)
    args = [
        "data",
        "prepare",
        "dvs128-gesture",
        "--set",
        f"data.root={root}",
        "--set",
        f"data.cache={tmp_path / 'c'}",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train: 11 samples, frames [16, 2, 64, 64] |u1" in out and "test: 11 samples" in out
    assert main(args) == 0 and "already complete" in capsys.readouterr().out
    assert (
        main(
            ["data", "prepare", "dvs128-gesture", "--set", f"data.root={tmp_path / 'none'}", "--no-progress"]
        )
        == 2
    )
    assert "trials_to_train.txt" in capsys.readouterr().err
    assert main(["data", "prepare", "demo", "--no-progress"]) == 0  # embedded MNIST: read in memory
    assert "test: 1000 samples ready" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "prepare",
                "detect-moving-digits",
                "--set",
                "data.train_subset=3",
                "--set",
                "data.test_subset=2",
                "--set",
                f"data.cache={tmp_path / 'md'}",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "train: 3 samples ready" in capsys.readouterr().out


@pytest.mark.parametrize(
    "recipe", ["nmnist", "vgg9-cifar10dvs", "vgg9-ncaltech101", "dvs128-gesture", "resnet19-cifar10"]
)
def test_load_frames_from_every_event_recipe(tmp_path, recipe):
    from spquant.data.prepare import load_frames
    from spquant.train.config import load_config

    writers = {
        "nmnist": fake.write_nmnist,
        "vgg9-cifar10dvs": fake.write_cifar10dvs,
        "vgg9-ncaltech101": fake.write_ncaltech101,
        "dvs128-gesture": fake.write_dvs128_gesture,
        "resnet19-cifar10": fake.write_cifar10,
    }
    root = writers[recipe](tmp_path / "data")
    cfg = load_config(
        recipe,
        [
            f"data.root={root}",
            f"data.cache={tmp_path / 'cache'}",
            "data.train_subset=5",
            "run.progress=false",
        ],
    )
    train, test = load_frames(cfg, "train"), load_frames(cfg, "test")
    assert len(train) == 5 and len(test) >= 1
    x, y = pp.collate_frames([train[0], train[1]])
    assert x.shape == (cfg.model.T, 2, cfg.model.in_channels, *cfg.model.input) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < cfg.model.classes


def test_dataset_pickles_without_its_frames(tmp_path):
    import pickle

    root = fake.write_nmnist(tmp_path / "nmnist", per_class=1)
    ds = FrameDataset(_prep("nmnist", root, tmp_path, T=2, polarity="count2"), "train")
    x0, _ = ds[0]  # opens the map in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # 10 samples x 2 x 2 x 34 x 34 bytes would be 46 kB
    torch.testing.assert_close(pickle.loads(blob)[0][0], x0)


def test_spikingjelly_npz_validation(tmp_path):
    import io
    import zipfile

    from spquant.data.datasets import read_spikingjelly_npz

    np.savez(
        tmp_path / "ok.npz", t=np.array([5, 9]), x=np.array([1, 2]), y=np.array([3, 4]), p=np.array([1, 0])
    )
    assert read_spikingjelly_npz(tmp_path / "ok.npz").tolist() == [(1, 3, 5, 1), (2, 4, 9, 0)]
    np.savez(tmp_path / "keys.npz", t=np.array([1]), x=np.array([1]))
    with pytest.raises(sd.EventFileError, match=r"keys\.npz.*lacks arrays \['y', 'p'\]"):
        read_spikingjelly_npz(tmp_path / "keys.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(sd.EventFileError, match=r"junk\.npz.*not a readable"):
        read_spikingjelly_npz(tmp_path / "junk.npz")
    # a header declaring 10**12 elements in a tiny member: refused before anything is allocated
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "forged.npz", "w") as zf:
        for k in "txyp":
            zf.writestr(f"{k}.npy", buf.getvalue() + bytes(16))
    with pytest.raises(sd.EventFileError, match=r"forged\.npz.*declares 8000000000000 bytes"):
        read_spikingjelly_npz(tmp_path / "forged.npz")


def test_cifar10dvs_finds_tonics_aedat4_mirror(tmp_path):
    for c in fake.CIFAR10_CLASSES:  # tonic unpacks into save_to/CIFAR10DVS/<class>/cifar10_<class>_<k>.aedat4
        (tmp_path / "CIFAR10DVS" / c).mkdir(parents=True)
        for k in range(10):
            (tmp_path / "CIFAR10DVS" / c / f"cifar10_{c}_{k}.aedat4").write_bytes(b"#!AER-DAT4.0\r\n")
    ds = sd.CIFAR10DVS(tmp_path, "test")
    assert ds.layout == "aedat4" and len(ds) == 10 and all(f.suffix == ".aedat4" for f in ds.files)
    pytest.importorskip("aedat", reason="optional extra spquant[aedat] not installed")
    with pytest.raises(sd.EventFileError, match=r"cifar10_\w+_\d\.aedat4"):
        ds[0]
    with pytest.raises(sd.EventFileError, match=r"CIFAR10-DVS recordings.*events_np"):
        sd.CIFAR10DVS(tmp_path / "CIFAR10DVS" / "cat", "train")


def test_load_split_streams_prepared_sets_with_batch_augmentation(tmp_path):
    from spquant.train.config import load_config
    from spquant.train.data import DatasetData, load_split

    root = fake.write_nmnist(tmp_path / "nmnist", per_class=2)
    cfg = load_config(
        "nmnist",
        [
            f"data.root={root}",
            f"data.cache={tmp_path / 'cache'}",
            "data.augment=flip+roll",
            "run.progress=false",
        ],
    )
    data = load_split(cfg, "train")
    assert isinstance(data, DatasetData) and len(data) == 20
    idx = torch.tensor([3, 0, 7])
    plain, y = data.batch(idx, cfg.model.T)
    assert plain.shape == (10, 3, 2, 32, 32) and y.tolist() == [int(data.dataset[i][1]) for i in (3, 0, 7)]
    a, _ = data.batch(idx, cfg.model.T, augment="flip+roll", generator=torch.Generator().manual_seed(5))
    b, _ = data.batch(idx, cfg.model.T, augment="flip+roll", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, plain)  # seeded by the loop's generator
    assert torch.equal(a, a.round())  # integer counts stay integer
    assert torch.equal(a.sum(dim=(0, 2, 3, 4)), plain.sum(dim=(0, 2, 3, 4)))  # roll + flip keep every event


def test_cli_prepare_names_a_corrupt_recording(tmp_path, capsys):
    from spquant.cli import main

    root = fake.write_nmnist(tmp_path / "nmnist", per_class=1)
    bad = root / "Train" / "4" / "00000.bin"
    bad.write_bytes(bad.read_bytes()[:-2])  # not a multiple of the 5-byte event
    args = [
        "data",
        "prepare",
        "nmnist",
        "--set",
        f"data.root={root}",
        "--set",
        f"data.cache={tmp_path / 'c'}",
        "--no-progress",
    ]
    assert main(args + ["--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "00000.bin" in err and "truncated" in err
    (out,) = (tmp_path / "c").iterdir()
    assert not (out / "index.json").exists()  # nothing claims to be finished
