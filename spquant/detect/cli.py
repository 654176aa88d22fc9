"""``spquant detect plot RUN``: a picture of a detection run's predicted vs true boxes.

Detection runs are trained, evaluated, costed, exported and reported by the same commands as every
other run (``spquant train --config detect-moving-digits:quant``, ``spquant eval``, ...)."""

from __future__ import annotations


def _plot(args) -> int:
    from spquant.detect.plot import plot_detections
    from spquant.train.data import load_split
    from spquant.train.run import load_run

    run = load_run(args.run)
    if run.task != "detect":
        raise ValueError(f"{args.run} is a {run.task} run; 'spquant detect plot' draws detection runs")
    ds = load_split(run.config, "test").dataset
    plot_detections(
        run.model, ds, list(range(args.first, args.first + args.n)), args.out, conf_threshold=args.conf
    )
    print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect",
        help="pictures of a detection run's boxes (train/eval/...: the usual commands)",
        description="Detection runs use the one pipeline: spquant train --config "
        "detect-moving-digits:quant --out RUN; spquant eval RUN; spquant report RUN ...",
    )
    sub = p.add_subparsers(dest="detect_command", metavar="ACTION")
    q = sub.add_parser("plot", help="picture of predicted vs true boxes on event frames of the test split")
    q.add_argument("run", help="detection run folder")
    q.add_argument("--out", default="detections.png")
    q.add_argument("--n", type=int, default=8)
    q.add_argument("--first", type=int, default=0)
    q.add_argument("--conf", type=float, default=0.3)
    q.set_defaults(func=_plot)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
