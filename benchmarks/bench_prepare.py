"""``spquant data prepare`` throughput on CIFAR10-DVS-shaped data, and what the cache buys per epoch.

Writes ``--files`` AEDAT 2.0 recordings of a 128x128 DVS128 (``--events`` random events each over
1.3 s, the CIFAR10-DVS layout ``<class>/cifar10_<class>_<k>.aedat``), then measures, in one run:

* prepare: events -> frames into the on-disk cache (the paper's preprocessing: T = 10 time bins,
  3-channel polarity colouring, area resize to 48x48), with 1 and with ``--workers`` processes;
  reported as frames/s (= samples x T per second) and events/s;
* one epoch of reading: from the cache (``FrameDataset`` + ``frame_loader``) versus decoding and
  binning the raw files again (what training without the cache does every epoch); the ratio is the
  number to quote, not the absolute speed.

Each measurement is repeated ``--repeats`` times (median and min..max); the machine's load average
is printed, because the absolute numbers depend on it.

    python benchmarks/bench_prepare.py --files 200 --events 100000 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spquant.data import CIFAR10DVS, make_events, write_aedat2  # noqa: E402
from spquant.data.datasets import CIFAR10_CLASSES  # noqa: E402
from spquant.data.prepare import FrameDataset, FrameSpec, frame_loader, make_frames, prepare  # noqa: E402


def write_files(root: Path, n: int, events: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k in range(n):
        c = CIFAR10_CLASSES[k % 10]
        (root / c).mkdir(parents=True, exist_ok=True)
        ev = make_events(
            rng.integers(0, 128, events),
            rng.integers(0, 128, events),
            np.sort(rng.integers(0, 1_300_000, events)),
            rng.integers(0, 2, events),
        )
        write_aedat2(root / c / f"cifar10_{c}_{k // 10}.aedat", ev)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(xs: list[float], scale: float, unit: str) -> str:
    rates = sorted(scale / x for x in xs)
    return f"{statistics.median(rates):,.0f} {unit} (min {rates[0]:,.0f}, max {rates[-1]:,.0f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--events", type=int, default=100_000, help="events per recording")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--keep", default=None, help="folder to keep the data and caches in (default: a temp folder)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    data = base / "cifar10-dvs"
    if not data.is_dir():
        write_files(data, args.files, args.events)
    spec = FrameSpec(T=10, polarity="polarity3", size=(48, 48), fit="resize", split_mode="per_class")
    n_train = len(CIFAR10DVS(data, "train", split_mode="per_class"))
    n_all = args.files
    print(
        f"{args.files} AEDAT 2.0 files x {args.events:,} events (128x128), T=10, polarity3, 48x48; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.repeats} repeats"
    )

    results = {}
    for workers in sorted({1, args.workers}):

        def run(workers=workers):
            out = base / f"cache-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            prepare("cifar10-dvs", data, spec, out, workers=workers, progress=False)

        ts = timed(run, args.repeats)
        results[workers] = ts
        print(
            f"prepare, {workers} worker(s): {fmt(ts, n_all * 10, 'frames/s')}; "
            f"{fmt(ts, n_all * args.events, 'events/s')}"
        )

    cache = prepare(
        "cifar10-dvs", data, spec, base / f"cache-w{args.workers}", workers=args.workers, progress=False
    )
    ds = FrameDataset(cache, "train")

    def epoch_cache():
        for _ in frame_loader(ds, batch_size=24, shuffle=True, workers=0):
            pass

    src = CIFAR10DVS(data, "train", split_mode="per_class")
    shape = (10, 3, 48, 48)

    def epoch_raw():
        for i in range(len(src)):
            ev, _ = src[i]
            torch.from_numpy(make_frames(ev, src, spec, False, shape, np.dtype(np.float16))).float()

    tc = timed(epoch_cache, args.repeats)
    tr = timed(epoch_raw, args.repeats)
    print(f"one training epoch ({n_train} samples), from the cache: {fmt(tc, n_train, 'samples/s')}")
    print(f"one training epoch, decoding + binning the raw files: {fmt(tr, n_train, 'samples/s')}")
    print(f"cache / raw speed-up per epoch: {statistics.median(tr) / statistics.median(tc):.1f}x (medians)")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
