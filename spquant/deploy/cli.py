"""``spquant export`` and ``spquant run``: write a trained run as a .spq file; run a .spq file."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

__all__ = ["register", "load_dataset", "program_config"]


class RunDataError(ValueError):
    """``spquant run --data`` names nothing the recipe system can load, or data that does not fit."""


# names 'spquant run --data' has always accepted, as data sections of the run's config
_ALIASES = {
    "mnist-embedded": {"dataset": "mnist", "source": "embedded"},
    "mnist-events": {"dataset": "mnist-dvs", "source": "embedded"},
}


def program_config(program):
    """The training config stored in a .spq file by ``spquant export`` (None for older files)."""
    from spquant.train.config import config_from_dict

    raw = (program.meta or {}).get("config")
    return None if raw is None else config_from_dict(raw, "the .spq file's training config")


def _data_config(config, spec: str | None, overrides: list[str]):
    """The run's config with the data section ``spec`` names: None (the run's own data), a recipe
    (NAME[:VARIANT] or FILE.toml: its data set, source, root and options), a dataset name, or an
    alias (mnist-embedded, mnist-events). Preprocessing (encoding, resize, T, input size, channels)
    stays the run's: the model was trained on it."""
    from spquant.train.config import (
        CLASSIFY_DATASETS,
        DETECT_DATASETS,
        ConfigError,
        config_from_dict,
        load_config,
        parse_overrides,
    )

    raw = config.to_dict()
    data = raw["data"]
    if spec in _ALIASES:
        data.update(_ALIASES[spec], root="", options={})
    elif spec in CLASSIFY_DATASETS + DETECT_DATASETS:
        data.update(dataset=spec, root="", options={})
        data["source"] = "full" if spec in ("mnist", "mnist-dvs") else data["source"]
    elif spec is not None:
        try:
            other = load_config(spec).data
        except ConfigError as e:
            raise RunDataError(f"--data {spec!r} is no .npz file, recipe or dataset name: {e}") from None
        data.update(
            dataset=other.dataset,
            source=other.source,
            root=other.root,
            cache=other.cache,
            options=dict(other.options),
        )
    for key, value in parse_overrides(overrides):
        data[key.removeprefix("data.")] = value
    return config_from_dict(raw, f"--data {spec or 'of the run'}")


def load_dataset(spec: str | None, limit: int | None, config=None, overrides: list[str] = ()):
    """(codes, labels, static) for ``spquant run --data``.

    ``spec``: an ``.npz`` file with ``x`` (uint8 codes [N, C, H, W] static or [N, T, C, H, W]
    frames) and ``y`` (labels [N]); else the test split that the recipe system loads for the run's
    ``config`` (see :func:`_data_config`), preprocessed exactly as in training.
    """
    if spec is not None and spec.endswith(".npz"):
        with np.load(spec, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    else:
        if config is None:
            raise RunDataError(
                "this .spq file holds no training config (it was exported by an older spquant); "
                "pass --data FILE.npz with x codes and y labels"
            )
        cfg = _data_config(config, spec, list(overrides))
        if cfg.task != "classify":
            raise RunDataError(
                "this program is a detector: its data are scored by mAP (spquant run does so itself)"
            )
        from spquant.deploy.program import input_encoding
        from spquant.train.data import load_split

        if limit:
            cfg = _data_config(cfg, None, [f"data.test_subset={limit}"])
        split = load_split(cfg, "test")
        enc = input_encoding(cfg)
        x, y = _codes(split, cfg, enc["input_scale"])
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return np.asarray(x), np.asarray(y).astype(np.int64), np.asarray(x).ndim == 4


def _codes(split, cfg, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer input codes ([N, C, H, W] static, [N, T, C, H, W] frames) and labels of a test split,
    exactly the inputs the model saw in training divided by the input scale."""
    import torch

    from spquant.train.data import TensorData

    if isinstance(split, TensorData):
        if abs(split.scale - scale) > 1e-12:
            raise RunDataError(f"data scale {split.scale} differs from the model's input scale {scale}")
        x, y = split.inputs.numpy(), split.labels.numpy()
        if np.issubdtype(x.dtype, np.floating) and not np.array_equal(x, np.round(x)):
            raise RunDataError("the data are not integer codes (area-resized event frames?)")
        return x, y
    xs, ys = [], []
    for s in range(0, len(split), 256):
        x, y = split.batch(torch.arange(s, min(s + 256, len(split))), cfg.model.T)
        codes = x.double() / scale
        rounded = codes.round()
        if float((codes - rounded).abs().max()) > 1e-3:
            raise RunDataError(
                "the data are not integer codes at the model's input scale (area-resized event frames?)"
            )
        xs.append(rounded[0] if cfg.data.encoding == "direct" else rounded.transpose(0, 1))
        ys.append(y)
    x = torch.cat(xs).numpy()
    x = x.astype(np.uint8 if x.min() >= 0 and x.max() <= 255 else np.int32)
    return x, torch.cat(ys).numpy()


def _pad_to(x: np.ndarray, shape) -> np.ndarray:
    """Zero-pad (centred) or reject spatial sizes to the model's input [C, H, W]."""
    H, W = shape[-2:]
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    if h > H or w > W:
        raise RunDataError(f"data {h}x{w} is larger than the model input {H}x{W}")
    ph, pw = (H - h) // 2, (W - w) // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(ph, H - h - ph), (pw, W - w - pw)]
    return np.pad(x, pad)


def _project_errors() -> tuple:
    from spquant.train.checkpoint import CheckpointError

    return (CheckpointError, OSError, ValueError)  # ConfigError, DeployError, ModelFileError are ValueErrors


def _err(msg: str) -> int:
    import sys

    print(f"spquant: error: {msg}", file=sys.stderr)
    return 2


def cmd_export(args) -> int:
    from spquant.deploy.program import input_encoding
    from spquant.deploy.targets.spq import file_report
    from spquant.train.run import load_run

    try:
        run = load_run(args.run)
        enc = input_encoding(run.config)
        if args.input_shape:
            enc["input_shape"] = tuple(int(s) for s in args.input_shape.split(","))
        if args.input_bits is not None:
            enc["input_bits"] = args.input_bits
        if args.input_scale is not None:
            enc["input_scale"] = args.input_scale
        from spquant.deploy.fold import fold_model
        from spquant.deploy.targets.spq import save

        program = fold_model(
            run.model,
            enc["input_shape"],
            input_bits=enc["input_bits"],
            input_scale=enc["input_scale"],
            frac_bits=args.frac_bits,
        )
        if not args.no_compact:
            from spquant.deploy.compact import compact

            program, report = compact(program)
            if report.changed:
                print(report, file=sys.stderr)
        program.meta = {
            **program.meta,
            "config": run.config.to_dict(),
        }  # 'spquant run' preprocesses data as in training
        save(program, args.output)
    except _project_errors() as e:
        return _err(f"cannot export {args.run}: {e}")
    print(json.dumps(file_report(args.output), indent=2))
    return 0


def cmd_run(args) -> int:
    from spquant.deploy.interpreter import Interpreter
    from spquant.deploy.targets.spq import file_report, load

    try:
        program = load(args.model)
        config = program_config(program)
        if config is not None and config.task == "detect":
            return _run_detector(args, program, config)
        x, y, static = load_dataset(args.data, args.limit, config, args.overrides)
        x = _pad_to(x, program.input["shape"])
    except _project_errors() as e:
        return _err(str(e))
    T = args.T or (config.model.T if config is not None else 4)
    interp = Interpreter(program)
    if not static:
        x = np.moveaxis(x, 1, 0)  # [N, T, ...] -> [T, N, ...]
    res = {
        "model": args.model,
        "data": args.data or "the run's own test split",
        "T": T if static else int(x.shape[0]),
        "path": args.path,
    }
    correct, n, t0 = 0, 0, time.perf_counter()
    ops = {}
    N = x.shape[0] if static else x.shape[1]
    for i in range(0, N, args.batch_size):
        xb = x[i : i + args.batch_size] if static else x[:, i : i + args.batch_size]
        pred = interp.predict(xb, T=T if static else None, path=args.path)
        correct += int((pred == y[i : i + args.batch_size]).sum())
        n += len(pred)
        if args.path == "reference":
            for k, v in interp.last_counts.as_dict().items():
                ops[k] = ops.get(k, 0) + v
    dt = time.perf_counter() - t0
    res.update(
        {
            "samples": n,
            "accuracy": correct / max(n, 1),
            "seconds": round(dt, 3),
            "samples_per_s": round(n / dt, 1) if dt else None,
        }
    )
    if ops:
        res["ops_per_sample"] = {k: v / max(n, 1) for k, v in ops.items()}
    res["file"] = file_report(args.model)
    print(json.dumps(res, indent=2))
    return 0


def _run_detector(args, program, config) -> int:
    """mAP of an integer detector on the test split its run's config (or --data) names."""
    import torch

    from spquant.deploy.detection import evaluate_integer_detector
    from spquant.deploy.interpreter import Interpreter
    from spquant.deploy.targets.spq import file_report
    from spquant.train.data import load_split

    if args.data is not None and args.data.endswith(".npz"):
        raise RunDataError("a detector is scored on a detection data set (boxes), not on an .npz of labels")
    cfg = _data_config(
        config, args.data, list(args.overrides) + ([f"data.test_subset={args.limit}"] if args.limit else [])
    )
    split = load_split(cfg, "test")
    interp = Interpreter(program)

    def batches():
        for s in range(0, len(split), args.batch_size):
            x, boxes = split.batch(torch.arange(s, min(s + args.batch_size, len(split))), cfg.model.T)
            codes = x.numpy()
            if not np.array_equal(codes, np.round(codes)):
                raise RunDataError("the detection frames are not integer codes")
            yield codes.astype(np.int64), boxes

    d = cfg.detect
    t0 = time.perf_counter()
    m = evaluate_integer_detector(
        lambda c: interp.run(c, path=args.path), program, batches(), d.conf_threshold, d.nms_iou, d.max_det
    )
    dt = time.perf_counter() - t0
    res = {
        "model": args.model,
        "data": args.data or "the run's own test split",
        "T": cfg.model.T,
        "path": args.path,
        "samples": m["samples"],
        "mAP50": float(m["mAP50"]),
        "mAP50_95": float(m["mAP50_95"]),
        "seconds": round(dt, 3),
        "samples_per_s": round(m["samples"] / dt, 1) if dt else None,
        "file": file_report(args.model),
    }
    print(json.dumps(res, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="fold a trained run into an integer .spq model file",
        description="Fold BN and weight scales into fixed point and write a .spq file (docs/deploy_format.md).",
    )
    p.add_argument("run", help="run folder written by 'spquant train'")
    p.add_argument("-o", "--output", required=True, help="output .spq path (written atomically)")
    p.add_argument(
        "--input-shape", default=None, help="C,H,W of one input step (default: from the run's config)"
    )
    p.add_argument(
        "--input-bits",
        type=int,
        default=None,
        help="input code bits (default 8: uint8 pixels or event counts)",
    )
    p.add_argument(
        "--input-scale",
        type=float,
        default=None,
        help="float value of input code 1 (default: 1/255 for images, 1 for event counts)",
    )
    p.add_argument(
        "--frac-bits", type=int, default=16, help="fixed-point fraction bits F of currents and thresholds"
    )
    p.add_argument(
        "--no-compact",
        action="store_true",
        help="keep channels whose gate can never open (by default they are removed: the outputs are identical)",
    )
    p.set_defaults(func=cmd_export)

    r = subparsers.add_parser(
        "run",
        help="run a .spq model with the integer interpreter",
        description="Accuracy, op counts (reference path), file size and samples/s of a .spq model.",
    )
    r.add_argument("model", help=".spq file")
    r.add_argument(
        "--data",
        default=None,
        help="the test split to score: a recipe (NAME[:VARIANT] or FILE.toml), a dataset "
        "name (root: $SPQUANT_DATA/<dataset>), mnist-embedded, mnist-events, or FILE.npz (x codes, y labels); "
        "default: the run's own data. Preprocessing is always the run's (stored in the .spq file)",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="data.KEY=VALUE",
        help="override a data key of the run's config, e.g. --set data.root=/data/mnist",
    )
    r.add_argument(
        "--T", type=int, default=None, help="time steps for static inputs (default: the run's model.T)"
    )
    r.add_argument("--limit", type=int, default=None, help="first N samples only")
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument(
        "--path",
        choices=("fast", "reference"),
        default="fast",
        help="interpreter path (reference also counts ops)",
    )
    r.set_defaults(func=cmd_run)
