"""``spquant detect {train,eval,plot}`` (also ``python -m spquant.detect ...``).

``register(subparsers)`` adds the ``detect`` command to the ``spquant`` CLI (list
``'spquant.detect.cli'`` in ``spquant.cli.COMMAND_MODULES``).

Examples::

    python -m spquant.detect train detect-moving-digits:quant --out runs/det-quant
    python -m spquant.detect eval runs/det-quant
    python -m spquant.detect plot runs/det-quant --out docs/img/detections.png
    python -m spquant.detect report runs/det-fp32 runs/det-quant runs/det-spquant
"""

from __future__ import annotations

import argparse
import json
import sys


def _train(args) -> int:
    from spquant.detect.train import load_recipe, train_detector

    cfg = load_recipe(args.recipe, args.set)
    out = args.out or f"runs/{cfg['name']}" + (f"-{cfg['variant']}" if cfg.get("variant") else "")
    m = train_detector(cfg, out)
    print(json.dumps({k: v for k, v in m.items() if k != "cost"}, default=str))
    print(f"run saved to {out}")
    return 0


def _eval(args) -> int:
    from spquant.detect.train import build_detection_data, detection_cost, evaluate_detector, load_run

    model, cfg, _ = load_run(args.run)
    ds = build_detection_data(cfg, args.split)
    metrics, _, _ = evaluate_detector(model, ds, cfg)
    out = {"mAP50": metrics["mAP50"], "mAP50_95": metrics["mAP50_95"], "AP50_coco": metrics["AP50_coco"],
           "mAP50_agnostic": metrics["mAP50_agnostic"], "mAP50_95_agnostic": metrics["mAP50_95_agnostic"],
           "AP_per_class": metrics["AP_per_class"], "n_det": metrics["n_det"], "mode": model.spec.mode}
    if args.cost:
        cost = detection_cost(model, ds, cfg)
        if cost:
            out["cost"] = cost
    print(json.dumps(out, indent=1, default=str))
    return 0


def _plot(args) -> int:
    from spquant.detect.train import build_detection_data, load_run, plot_detections

    model, cfg, _ = load_run(args.run)
    ds = build_detection_data(cfg, "test")
    plot_detections(model, ds, list(range(args.first, args.first + args.n)), args.out, conf_threshold=args.conf)
    print(f"wrote {args.out}")
    return 0


def _report(args) -> int:
    from spquant.detect.train import markdown_report, report_rows

    table = markdown_report(report_rows(args.runs))
    print(table)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("detect", help="spiking YOLO object detection: train / eval / plot",
                              description="Object detection with a spiking YOLO (recipes with task = 'detect').")
    sub = p.add_subparsers(dest="detect_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a detector from a recipe (NAME[:VARIANT] or a TOML path)")
    t.add_argument("recipe")
    t.add_argument("--out", help="run folder (default runs/NAME-VARIANT)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key, e.g. train.epochs=2")
    t.set_defaults(func=_train)
    e = sub.add_parser("eval", help="mAP@0.5 and mAP@[.5:.95] of a run on its test data")
    e.add_argument("run")
    e.add_argument("--split", default="test")
    e.add_argument("--cost", action="store_true", help="also report memory and measured FLOPs (spquant.cost)")
    e.set_defaults(func=_eval)
    q = sub.add_parser("plot", help="picture of predicted vs true boxes on event frames")
    q.add_argument("run")
    q.add_argument("--out", default="docs/img/detections.png")
    q.add_argument("--n", type=int, default=8)
    q.add_argument("--first", type=int, default=0)
    q.add_argument("--conf", type=float, default=0.3)
    q.set_defaults(func=_plot)
    r = sub.add_parser("report", help="markdown table of detection runs: bits, memory, FLOPs reduction, mAP, drop vs FP32")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", help="also write the table to this file")
    r.set_defaults(func=_report)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spquant.detect")
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    args = parser.parse_args(["detect", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)
