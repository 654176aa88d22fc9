"""``spquant export`` and ``spquant run``: write a trained run as a .spq file; run a .spq file."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

__all__ = ["register", "load_run_model", "load_dataset"]


def load_run_model(run: str):
    """(model in eval mode, its training config) of a run folder written by ``spquant train``."""
    from spquant.train import load_run

    loaded = load_run(run)
    return loaded["model"].eval(), loaded["config"]


def load_dataset(spec: str, limit: int | None, T: int):
    """(codes, labels, static) for ``spquant run --data``.

    ``mnist`` (full MNIST test set from ``--mnist-dir``/../shared/data/mnist, else the embedded
    1,000-image subset), ``mnist-embedded``, ``mnist-events`` (emulated N-MNIST-like events,
    polarity3 frames), or an ``.npz`` file with ``x`` (uint8 codes [N, C, H, W] static or
    [N, T, C, H, W] frames) and ``y`` (labels [N]).
    """
    if spec.endswith(".npz"):
        with np.load(spec, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    elif spec in ("mnist", "mnist-embedded"):
        x = None
        if spec == "mnist":
            from pathlib import Path

            from spquant.data.idx import read_idx

            d = Path(os.environ.get("SPQUANT_MNIST", Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))
            if (d / "t10k-images-idx3-ubyte.gz").is_file():
                x, y = read_idx(d / "t10k-images-idx3-ubyte.gz")[:, None], read_idx(d / "t10k-labels-idx1-ubyte.gz")
        if x is None:
            from spquant.data.embedded import load_embedded_mnist

            _, _, x, y = load_embedded_mnist()
            x = x[:, None]
    elif spec == "mnist-events":
        from spquant.data.loader import mnist_frames

        x, y = mnist_frames("test", T=T, encoding="events", limit=limit)
        x, y = x.numpy(), y.numpy()
    else:
        raise SystemExit(f"spquant run: unknown --data {spec!r}")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return np.asarray(x), np.asarray(y).astype(np.int64), np.asarray(x).ndim == 4


def _pad_to(x: np.ndarray, shape) -> np.ndarray:
    """Zero-pad (centred) or reject spatial sizes to the model's input [C, H, W]."""
    H, W = shape[-2:]
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    if h > H or w > W:
        raise SystemExit(f"spquant run: data {h}x{w} is larger than the model input {H}x{W}")
    ph, pw = (H - h) // 2, (W - w) // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(ph, H - h - ph), (pw, W - w - pw)]
    return np.pad(x, pad)


def cmd_export(args) -> int:
    from spquant.deploy.program import DeployError, input_encoding
    from spquant.deploy.targets.spq import export, file_report

    model, config = load_run_model(args.run)
    try:
        enc = input_encoding(config)
    except DeployError as e:
        print(f"spquant export: {e}", file=sys.stderr)
        return 2
    if args.input_shape:
        enc["input_shape"] = tuple(int(s) for s in args.input_shape.split(","))
    if args.input_bits is not None:
        enc["input_bits"] = args.input_bits
    if args.input_scale is not None:
        enc["input_scale"] = args.input_scale
    export(model, args.output, enc["input_shape"], input_bits=enc["input_bits"], input_scale=enc["input_scale"], frac_bits=args.frac_bits)
    print(json.dumps(file_report(args.output), indent=2))
    return 0


def cmd_run(args) -> int:
    from spquant.deploy.interpreter import Interpreter
    from spquant.deploy.targets.spq import file_report, load

    program = load(args.model)
    interp = Interpreter(program)
    x, y, static = load_dataset(args.data, args.limit, args.T)
    x = _pad_to(x, program.input["shape"])
    if not static:
        x = np.moveaxis(x, 1, 0)  # [N, T, ...] -> [T, N, ...]
    res = {"model": args.model, "data": args.data, "T": args.T if static else int(x.shape[0]), "path": args.path}
    correct, n, t0 = 0, 0, time.perf_counter()
    ops = {}
    N = x.shape[0] if static else x.shape[1]
    for i in range(0, N, args.batch_size):
        xb = x[i:i + args.batch_size] if static else x[:, i:i + args.batch_size]
        pred = interp.predict(xb, T=args.T if static else None, path=args.path)
        correct += int((pred == y[i:i + args.batch_size]).sum())
        n += len(pred)
        if args.path == "reference":
            for k, v in interp.last_counts.as_dict().items():
                ops[k] = ops.get(k, 0) + v
    dt = time.perf_counter() - t0
    res.update({"samples": n, "accuracy": correct / max(n, 1), "seconds": round(dt, 3), "samples_per_s": round(n / dt, 1) if dt else None})
    if ops:
        res["ops_per_sample"] = {k: v / max(n, 1) for k, v in ops.items()}
    res["file"] = file_report(args.model)
    print(json.dumps(res, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="fold a trained run into an integer .spq model file",
                              description="Fold BN and weight scales into fixed point and write a .spq file (docs/deploy_format.md).")
    p.add_argument("run", help="run folder written by 'spquant train'")
    p.add_argument("-o", "--output", required=True, help="output .spq path (written atomically)")
    p.add_argument("--input-shape", default=None, help="C,H,W of one input step (default: from the run's config)")
    p.add_argument("--input-bits", type=int, default=None, help="input code bits (default 8: uint8 pixels or event counts)")
    p.add_argument("--input-scale", type=float, default=None, help="float value of input code 1 (default: 1/255 for images, 1 for event counts)")
    p.add_argument("--frac-bits", type=int, default=16, help="fixed-point fraction bits F of currents and thresholds")
    p.set_defaults(func=cmd_export)

    r = subparsers.add_parser("run", help="run a .spq model with the integer interpreter",
                              description="Accuracy, op counts (reference path), file size and samples/s of a .spq model.")
    r.add_argument("model", help=".spq file")
    r.add_argument("--data", default="mnist", help="mnist | mnist-embedded | mnist-events | FILE.npz (x codes, y labels)")
    r.add_argument("--T", type=int, default=4, help="time steps for static inputs (direct encoding)")
    r.add_argument("--limit", type=int, default=None, help="first N samples only")
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--path", choices=("fast", "reference"), default="fast", help="interpreter path (reference also counts ops)")
    r.set_defaults(func=cmd_run)
