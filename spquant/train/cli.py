"""``spquant train | eval | report | demo``."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

__all__ = ["register", "run_demo"]

_CONFIG_HELP = """\
CONFIG is a TOML file or the name of a shipped recipe: {recipes}.
Recipes have variants: NAME:fp32, NAME:quant (2-bit/4-bit weights, ternary membrane) and
NAME:spquant (+ spatial-channel pruning), e.g. 'mnist:quant' or 'vgg9-cifar10dvs:spquant'.
Top-level: name description task (classify | detect). Sections: [model] name width plan input
in_channels classes T anchors; [quant] mode weight_bits
first_bits last_bits weight_scale membrane_lb membrane_ub membrane_k tau threshold learn_threshold surrogate
prune={{...}}; [data] dataset source root encoding train_subset test_subset resize augment cache
options={{...}} bins polarity integer split layout roll_px crop_pad workers (root: '' =
$SPQUANT_DATA/<dataset>; event-frame keys: docs/data.md);
[train] epochs batch_size lr optimizer momentum schedule weight_decay threshold_lr seed lam phi
prune_loss_weight max_steps init_from init_calib_batches distill_teacher distill_weight
distill_temperature; [run] log_every checkpoint_every keep_checkpoints device threads
progress tensorboard; [detect] lambda_coord lambda_obj lambda_noobj lambda_cls ignore_threshold
conf_threshold nms_iou max_det. See docs/training.md."""


def _recipes() -> str:
    from spquant.train.config import list_recipes

    return ", ".join(list_recipes())


def register(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe (checkpoints, --resume, DDP via torchrun)",
        formatter_class=fmt,
        description=textwrap.dedent(
            """\
            Train a spiking network (classifier or detector) from a recipe and write the run folder OUT
            (written only once config, model and data have loaded; an existing run is refused
            unless --resume or --overwrite):
              config.json     the resolved config
              metrics.jsonl   one JSON record per log step / evaluation (TensorBoard too if installed)
              checkpoints/    step-N.safetensors + step-N.json, written atomically
              model.safetensors + model.json, run.json   final weights, config and metrics

            Multi-process / multi-GPU: torchrun --nproc_per_node=N -m spquant train ... (gloo on CPU,
            nccl on CUDA; train.batch_size is per process; only rank 0 writes).
            """
        )
        + "\n"
        + _CONFIG_HELP.format(recipes=_recipes()),
    )
    p.add_argument("--config", "-c", required=True, help="TOML file or recipe name[:variant]")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, value parsed as TOML (repeatable): --set train.lr=3e-4 --set quant.mode=quant",
    )
    p.add_argument("--out", "-o", required=True, help="run folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from its newest valid checkpoint (exact: same final weights as an uninterrupted run)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run in OUT (deletes its run files first)"
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from the weights of a finished (FP32) run folder: exact load, "
        "BN recalibrated, gates opened (sets train.init_from)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides run.device")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "eval",
        help="evaluate a trained run on its test set",
        formatter_class=fmt,
        description="Evaluate RUN_DIR's final model (or its newest checkpoint) on the test split of its data: accuracy (argmax of the mean logits over T) for classifiers, VOC mAP@0.5 and COCO mAP@[.5:.95] for detectors.",
    )
    e.add_argument("run_dir")
    e.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override data keys, e.g. --data source=full --data test_subset=0",
    )
    e.add_argument(
        "--checkpoint", action="store_true", help="use the newest checkpoint instead of model.safetensors"
    )
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=cmd_eval)

    r = subparsers.add_parser(
        "report",
        help="compare runs: bits, memory, FLOPs reduction, accuracy, drop vs FP32",
        formatter_class=fmt,
        description="Print a markdown table comparing RUN_DIRs (mode, weight/membrane bits, weight/membrane/total memory in MB = 1e6 bytes, FLOPs reduction of pruned runs, accuracy, drop vs the FP32 run of the same data and model). With --out, also write FILE.md and a PNG plot next to it (needs matplotlib; skipped with a message otherwise).",
    )
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--out", help="markdown file to write (plot: same name, .png)")
    r.add_argument("--no-plot", action="store_true")
    r.set_defaults(func=cmd_report)

    d = subparsers.add_parser(
        "demo",
        help="THE MAIN JOB: FP32 vs Quant vs SpQuant SNN on embedded MNIST, a paper-style table in minutes",
        formatter_class=fmt,
        description=textwrap.dedent(
            """\
                                  Train, on the real MNIST subset shipped inside spquant (6000 train / 1000 test images, no
                                  download), an FP32 SNN, a Quant-SNN (ternary weights, ternary 1.58-bit membrane) and — when
                                  the pruning module is available — a SpQuant-SNN of CPU scale, then print a table like the
                                  paper's: weight / membrane bits, memory, FLOPs reduction, accuracy and drop vs FP32.
                                  Takes a few minutes on a CPU. The runs are kept in --out for 'spquant report'.
                                  """
        ),
    )
    d.add_argument(
        "--out", default="runs/demo", help="folder for the three runs and report.md (default runs/demo)"
    )
    d.add_argument("--modes", default="auto", help="comma list of fp32,quant,spquant (auto: all available)")
    d.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the demo recipe (e.g. train.epochs=1)",
    )
    d.add_argument("--max-steps", type=int, default=0, help="stop each run after N steps (smoke tests)")
    d.add_argument("--test-subset", type=int, default=0, help="evaluate on N test images only (smoke tests)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)


def _err(msg: str) -> int:
    print(f"spquant: error: {msg}", file=sys.stderr)
    return 2


def _project_errors() -> tuple:
    from spquant.train.checkpoint import CheckpointError
    from spquant.train.config import ConfigError

    # data and config faults are ValueError / OSError (missing files, no data root)
    return (ConfigError, CheckpointError, OSError, ValueError, NotImplementedError)


def cmd_train(args) -> int:
    from spquant.train.config import load_config
    from spquant.train.loop import train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.init_from:
        overrides.append(f"train.init_from={json.dumps(str(args.init_from))}")  # a TOML basic string
    try:
        cfg = load_config(args.config, overrides)
        res = train(
            cfg,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=False if args.no_progress else None,
        )
    except _project_errors() as e:
        return _err(str(e))
    if res.run_dir is not None and _rank() == 0:
        print(f"{cfg.name}: {_headline(res.metrics)} after {res.metrics['steps']} steps -> {args.out}")
    return 0


def _headline(m: dict) -> str:
    if "mAP50" in m:
        return f"test mAP@0.5 {m['mAP50']:.4f}, mAP@[.5:.95] {m['mAP50_95']:.4f}"
    return f"test accuracy {100 * m['test_accuracy']:.2f} %"


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def cmd_eval(args) -> int:
    from spquant.train.config import config_from_dict, parse_overrides
    from spquant.train.data import load_split
    from spquant.train.loop import evaluate
    from spquant.train.run import load_run

    run = Path(args.run_dir)
    try:
        loaded = load_run(run, checkpoint=args.checkpoint, device=args.device)
        raw = loaded.config.to_dict()
        for key, value in parse_overrides(args.data):
            raw.setdefault("data", {})[key.removeprefix("data.")] = value
        cfg = config_from_dict(raw, str(run))
        device = next(loaded.model.parameters()).device
        ev = evaluate(loaded.model, load_split(cfg, "test"), cfg, device)
    except _project_errors() as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(ev))
    elif "mAP50" in ev:
        print(
            f"{run}: test mAP@0.5 {ev['mAP50']:.4f}, mAP@[.5:.95] {ev['mAP50_95']:.4f} on {ev['samples']} samples"
        )
    else:
        print(
            f"{run}: test accuracy {100 * ev['accuracy']:.2f} % on {ev['samples']} samples (loss {ev['loss']:.4f})"
        )
    return 0


def cmd_report(args) -> int:
    from spquant.report import write_report

    try:
        md, messages = write_report(args.run_dirs, args.out, plot=not args.no_plot)
    except _project_errors() as e:
        return _err(str(e))
    print(md)
    for m in messages:
        print(m, file=sys.stderr)
    return 0


def available_modes() -> list[str]:
    modes = ["fp32", "quant", "spquant"]
    return modes


def run_demo(
    out="runs/demo", modes="auto", overrides=(), max_steps=0, test_subset=0, progress=True
) -> tuple[str, float]:
    """Train the demo variants into OUT/<mode> and return (markdown table, seconds)."""
    from spquant.report import write_report
    from spquant.train.config import load_config
    from spquant.train.loop import train

    t0 = time.perf_counter()
    todo = available_modes() if modes == "auto" else [m.strip() for m in modes.split(",") if m.strip()]
    extra = list(overrides)
    if max_steps:
        extra.append(f"train.max_steps={max_steps}")
    if test_subset:
        extra.append(f"data.test_subset={test_subset}")
    dirs = []
    for mode in todo:
        cfg = load_config(f"demo:{mode}", extra)
        d = Path(out) / mode
        print(
            f"== {cfg.name}: {mode} SNN, T={cfg.model.T}, plan {list(cfg.model.plan or [])}, {cfg.train.epochs} epoch(s)",
            file=sys.stderr,
            flush=True,
        )
        train(cfg, d, progress=progress, overwrite=True)
        dirs.append(d)
    md, messages = write_report(dirs, str(Path(out) / "report.md"))
    return md, time.perf_counter() - t0


def cmd_demo(args) -> int:
    md, seconds = run_demo(
        args.out, args.modes, args.overrides, args.max_steps, args.test_subset, progress=not args.no_progress
    )
    print(md)
    print(f"demo finished in {seconds:.0f} s; runs and report.md in {args.out}")
    return 0
