"""``spquant data ...``: fetch data sets, emulate event data, inspect event files.

spquant data fetch NAME --root DIR        download + verify + unpack (or say what to put where)
spquant data emulate mnist --root DIR     MNIST -> emulated N-MNIST-like events, cached on disk
spquant data info FILE                    format, sensor size, event count and time span of a file
spquant data prepare RECIPE [--set k=v]   events -> frames once, into the on-disk frame cache
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="data sets: fetch, emulate event data, inspect event files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    from spquant.data.fetch import SOURCES

    f = sub.add_parser("fetch", help="download a data set with checksum checks")
    f.add_argument("name", choices=sorted(SOURCES), help="data set")
    f.add_argument(
        "--root",
        default=None,
        help="data folder (default $SPQUANT_DATA or ~/.cache/spquant/data); the data set goes into ROOT/NAME",
    )
    f.add_argument("--force", action="store_true", help="download again even if verified files exist")
    f.add_argument("--timeout", type=float, default=60.0, help="network timeout per request, seconds")
    f.set_defaults(func=cmd_fetch)

    e = sub.add_parser("emulate", help="turn static images into emulated event data (cached on disk)")
    e.add_argument(
        "dataset",
        choices=["mnist", "embedded-mnist"],
        help="'mnist': full MNIST IDX files in --root; 'embedded-mnist': the packaged subset",
    )
    e.add_argument(
        "--root",
        default=None,
        help="folder with the four MNIST IDX files (.gz or raw); default: $SPQUANT_DATA/mnist",
    )
    e.add_argument(
        "--out",
        default=None,
        help="cache folder (default: where EmulatedMNIST looks: "
        "$SPQUANT_CACHE or ~/.cache/spquant, then emulated_mnist/<source>-<parameter hash>)",
    )
    e.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    e.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    e.add_argument("--chunk", type=int, default=500, help="images per work item")
    e.add_argument("--limit", type=int, default=None, help="only the first N images of each split")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--dt-us", type=int, default=None, help="rendering time step (default: emulator default)")
    e.add_argument("--threshold", type=float, default=None, help="contrast threshold (ON and OFF)")
    e.set_defaults(func=cmd_emulate)

    pr = sub.add_parser(
        "prepare",
        help="turn a recipe's data set into frames once, into the on-disk cache",
        description="Reads every recording of the recipe's data set once and writes its frames "
        "(the recipe's T, size, polarity encoding, binning, fit) into a memory-mapped cache that "
        "training streams from. Interrupt it freely: a rerun resumes. The data set folder is "
        "data.root, else $SPQUANT_DATA/<dataset>; the cache folder data.cache, else "
        "$SPQUANT_CACHE/frames (default ~/.cache/spquant/frames).",
    )
    pr.add_argument("recipe", help="recipe name (e.g. vgg9-cifar10dvs, nmnist) or path to a .toml file")
    pr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set data.root=/data/cifar10-dvs (repeatable)",
    )
    pr.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    pr.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_prepare)

    i = sub.add_parser("info", help="describe an event file")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)


def cmd_fetch(args) -> int:
    from spquant.data.fetch import FetchError, fetch

    try:
        dest = fetch(args.name, args.root, force=args.force, timeout=args.timeout)
    except FetchError as e:
        print(f"spquant data fetch {args.name}: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: ready in {dest}")
    return 0


def cmd_emulate(args) -> int:
    import dataclasses

    import numpy as np

    from spquant.data.emulated import emulate_to_cache, emulated_mnist_dir
    from spquant.data.emulator import EmulatorConfig
    from spquant.data.events import EventFileError
    from spquant.data.fetch import default_root

    cfg = EmulatorConfig(seed=args.seed)
    if args.dt_us is not None:
        cfg = dataclasses.replace(cfg, dt_us=args.dt_us)
    if args.threshold is not None:
        cfg = dataclasses.replace(cfg, threshold_on=args.threshold, threshold_off=args.threshold)
    root = Path(args.root) if args.root else default_root() / "mnist"
    source = "embedded" if args.dataset == "embedded-mnist" else (root if args.root else "full")
    out = Path(args.out) if args.out else emulated_mnist_dir(source, cfg)
    if args.limit is not None and not args.out:
        out = out.with_name(out.name + f"-first{args.limit}")  # the name EmulatedMNIST(limit=N) uses
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    t_all = time.perf_counter()
    total = 0
    for split in splits:
        try:
            if args.dataset == "embedded-mnist":
                from spquant.data.embedded import load_embedded_mnist

                xtr, ytr, xte, yte = load_embedded_mnist()
                x, y = (xtr, ytr) if split == "train" else (xte, yte)
            else:
                from spquant.data.idx import load_idx_split

                x, y = load_idx_split(root, split)
        except (EventFileError, ValueError) as err:
            print(f"spquant data emulate: {err}", file=sys.stderr)
            return 2
        if args.limit is not None:
            x, y = x[: args.limit], y[: args.limit]
        t0 = time.perf_counter()
        emulate_to_cache(x, y, out, split, cfg, workers=args.workers, chunk=args.chunk, progress=True)
        off = np.load(out / f"{split}_offsets.npy")
        dt = time.perf_counter() - t0
        total += len(y)
        print(
            f"{split}: {len(y)} images -> {int(off[-1])} events ({off[-1] / max(len(y), 1):.0f} per sample) "
            f"in {dt:.1f} s"
        )
    print(f"done: {total} images in {time.perf_counter() - t_all:.1f} s; cache: {out}")
    return 0


def cmd_info(args) -> int:
    from spquant.data.events import EventFileError
    from spquant.data.readers import detect_format, read_recording

    try:
        fmt = detect_format(args.path)
        rec = read_recording(args.path)
    except (EventFileError, ImportError) as e:
        print(f"spquant data info: {e}", file=sys.stderr)
        return 2
    ev = rec.events
    span = int(ev["t"][-1] - ev["t"][0])
    print(
        f"{args.path}: {fmt}, sensor {rec.sensor_size or 'unknown'}, {ev.size} events, t {int(ev['t'][0])}.."
        f"{int(ev['t'][-1])} us ({span / 1e6:.3f} s), x < {int(ev['x'].max()) + 1}, y < {int(ev['y'].max()) + 1}, "
        f"ON {ev['p'].mean() * 100:.1f} %"
    )
    return 0


def cmd_prepare(args) -> int:
    from spquant.data.events import EventFileError
    from spquant.data.prepare import EVENT_DATASETS, FrameSpec, default_cache_root, prepare
    from spquant.data.roots import DataRootError, data_root
    from spquant.train.config import ConfigError, load_config

    try:
        config = load_config(args.recipe, args.overrides)
        d = config.data
        splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
        if d.dataset not in EVENT_DATASETS:
            return _prepare_through_pipeline(config, splits, not args.no_progress)
        spec = FrameSpec.from_config(config)
        root = data_root(d.dataset, d.root)
        cache_root = Path(d.cache).expanduser() if d.cache else default_cache_root()
        t0 = time.perf_counter()
        info = prepare(
            d.dataset,
            root,
            spec,
            cache_root,
            splits=splits,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (ConfigError, DataRootError, EventFileError, ValueError, OSError) as e:
        print(f"spquant data prepare: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"spquant data prepare: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    for s, meta in info.index["splits"].items():
        print(f"{s}: {meta['shape'][0]} samples, frames {meta['shape'][1:]} {meta['dtype']}")
    done = f"{info.made} samples framed in {dt:.1f} s" if info.made else "already complete"
    print(f"cache: {info.path} ({done})")
    return 0


def _prepare_through_pipeline(config, splits, progress: bool) -> int:
    """Data sets without a frame cache (MNIST and CIFAR-10 in memory, the emulator's and the generators' own caches,
    detection windows read from memory-mapped recordings): load every split once through the run
    pipeline, which fills whatever cache the data set keeps and checks that its files are there."""
    from spquant.train.data import load_split

    t0 = time.perf_counter()
    for s in splits:
        data = load_split(config, s, progress)
        print(f"{s}: {len(data)} samples ready")
    print(
        f"{config.data.dataset}: read by the run pipeline itself (no frame cache); its own caches are filled "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0
