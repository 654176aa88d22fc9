"""Tiny fake copies of the public data sets, in their exact on-disk layouts, filled with random events.

Used by the data tests and by the CLI tests that run every recipe. Each writer makes ``root`` (the
data set folder, what ``data.root`` points at) and returns it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _events(rng, n: int, w: int, h: int, t_max: int):
    from spquant.data.events import make_events

    return make_events(
        rng.integers(0, w, n),
        rng.integers(0, h, n),
        np.sort(rng.integers(0, t_max, n)),
        rng.integers(0, 2, n),
    )


def write_nmnist(root, per_class: int = 2, events: int = 300, seed: int = 0) -> Path:
    """``root/{Train,Test}/<digit>/<id>.bin`` (ATIS, 34x34)."""
    from spquant.data.readers import write_atis_bin

    rng, root = np.random.default_rng(seed), Path(root)
    for split in ("Train", "Test"):
        for d in range(10):
            (root / split / str(d)).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                write_atis_bin(root / split / str(d) / f"{k:05d}.bin", _events(rng, events, 34, 34, 300_000))
    return root


def write_ncaltech101(
    root, classes=("accordion", "airplanes", "anchor"), per_class: int = 7, events: int = 500, seed: int = 0
) -> Path:
    """``root/Caltech101/<class>/image_NNNN.bin`` (+ the BACKGROUND_Google folder, left out by default)."""
    from spquant.data.readers import write_atis_bin

    rng, root = np.random.default_rng(seed), Path(root)
    for c in (*classes, "BACKGROUND_Google"):
        (root / "Caltech101" / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            write_atis_bin(
                root / "Caltech101" / c / f"image_{k + 1:04d}.bin", _events(rng, events, 240, 180, 300_000)
            )
    return root


def write_cifar10dvs(
    root, layout: str = "aedat2", per_class: int = 5, events: int = 1000, seed: int = 0
) -> Path:
    """CIFAR10-DVS: 'aedat2' ``root/<class>/cifar10_<class>_<k>.aedat`` (raw DVS128 addresses),
    'aedat4' is not written here (needs an AEDAT 4 encoder), 'npz' SpikingJelly's
    ``root/events_np/<class>/cifar10_<class>_<k>.npz``."""
    from spquant.data.readers import write_aedat2

    rng, root = np.random.default_rng(seed), Path(root)
    for c in CIFAR10_CLASSES:
        folder = root / c if layout == "aedat2" else root / "events_np" / c
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            ev = _events(rng, events, 128, 128, 1_000_000)
            if layout == "aedat2":
                write_aedat2(folder / f"cifar10_{c}_{k}.aedat", ev)
            elif layout == "npz":
                np.savez(folder / f"cifar10_{c}_{k}.npz", t=ev["t"], x=ev["x"], y=ev["y"], p=ev["p"])
            else:
                raise ValueError(f"layout {layout!r}")
    return root


def write_dvs128_gesture(
    root, users=(1, 2, 24), gestures: int = 11, events: int = 4000, seed: int = 0
) -> Path:
    """``root/DvsGesture/userNN_<light>.aedat`` (AEDAT 3.1) + ``_labels.csv``, trials_to_{train,test}.txt
    (the last user is the test split, as users 24-29 are in the real set)."""
    from spquant.data.readers import write_aedat31

    rng, base = np.random.default_rng(seed), Path(root) / "DvsGesture"
    base.mkdir(parents=True, exist_ok=True)
    names = []
    for u in users:
        name = f"user{u:02d}_fluorescent"
        span = 100_000
        ev = _events(rng, events, 128, 128, gestures * span + 50_000)
        write_aedat31(base / f"{name}.aedat", ev)
        rows = ["class,startTime_usec,endTime_usec"]
        rows += [f"{g + 1},{g * span + 10_000},{(g + 1) * span}" for g in range(gestures)]
        (base / f"{name}_labels.csv").write_text("\n".join(rows) + "\n")
        names.append(f"{name}.aedat")
    (base / "trials_to_train.txt").write_text("\n".join(names[:-1]) + "\n")
    (base / "trials_to_test.txt").write_text(names[-1] + "\n")
    return Path(root)


def write_cifar10(root, train_per_batch: int = 6, test: int = 6, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` python pickles (protocol 2, as released)."""
    rng, base = np.random.default_rng(seed), Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", train_per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        d = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        with open(base / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return Path(root)


def write_prophesee_detection(
    root,
    sensor=(304, 240),
    event_type: int = 0,
    recordings: int = 2,
    events: int = 20_000,
    classes: int = 2,
    seed: int = 0,
) -> Path:
    """Gen1 / 1-Megapixel layout: ``root/{train,val,test}/<name>_td.dat`` + ``<name>_bbox.npy``
    (boxes every 50 ms after the first 0.5 s)."""
    from spquant.data.readers import write_gen1_boxes, write_prophesee_dat
    from spquant.data.readers.prophesee import BOX_DTYPE

    rng, root = np.random.default_rng(seed), Path(root)
    w, h = sensor
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for r in range(recordings):
            name = f"rec_{split}_{r}"
            ev = _events(rng, events, w, h, 1_000_000)
            write_prophesee_dat(
                root / split / f"{name}_td.dat",
                ev,
                sensor_size=sensor if event_type else None,
                event_type=event_type,
            )
            ts = np.repeat(np.arange(550_000, 1_000_000, 50_000), 2)
            b = np.zeros(ts.size, BOX_DTYPE)
            b["ts"] = ts
            b["w"] = rng.uniform(0.1 * w, 0.3 * w, ts.size)
            b["h"] = rng.uniform(0.1 * h, 0.3 * h, ts.size)
            b["x"] = rng.uniform(0, w - b["w"])
            b["y"] = rng.uniform(0, h - b["h"])
            b["class_id"] = rng.integers(0, classes, ts.size)
            write_gen1_boxes(root / split / f"{name}_bbox.npy", b)
    return root
