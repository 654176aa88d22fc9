"""The accuracy / operations trade-off of the budgeted gate: ``quant.prune.keep`` swept on
emulated-event MNIST (``mnist-dvs``), beside the FP32 SNN and the Quant-SNN of the same budget.

    python experiments/sparsity.py                          # train (resumable) + measure + RESULTS.md
    python experiments/sparsity.py --budget cpu             # the RESULTS.md budget (full MNIST events)
    python experiments/sparsity.py --keeps 1.0,0.5          # a subset of the sweep
    python experiments/sparsity.py --budget cpu --epochs 2 --schedule early --keeps 0.5,0.4 \
        --results docs/pruning_and_cost.md --marker sparsity-schedule   # a schedule at another length
    python experiments/sparsity.py --budget cpu --epochs 2 --keeps 0.5 --from-quant 0.5,0.45,0.6,0.7,0.75,0.8 \
        --levers distill,distill-fp32,seed-1,no-spatial-prior,early,spread-kept,width-0.0625,width-0.0625-ft \
        --results docs/pruning_and_cost.md --marker sparsity-levers    # what was tried against the gap

``--epochs`` trains every row (FP32, Quant, gated) for that many epochs; ``--schedule`` picks the
budgeted gates' warm-up / ramp (``SCHEDULES``); either one moves the runs to
``<out>/<budget>-<epochs>ep-<schedule>``. ``--only`` trains a subset of the rows (parallel jobs).
``--levers`` adds rows from ``LEVERS``: fine-tunes from the Quant-SNN row with one change each
(distillation, a prior off, a schedule, another seed) and narrower dense references.

Every row is one ``spquant train`` run under ``runs/sparsity/<budget>/<row>``. Per SpQuant row the
script measures, on the test split, the three accountings (``spquant cost --checkpoint RUN --json``
gives the same numbers), exports the integer program and times the integer interpreter's fast path
against the same interpreter with skipping disabled and against the PyTorch float eval of the same
model (same process, alternating repeats, median and spread), then rewrites the section between
the sparsity markers of RESULTS.md and docs/img/sparsity_pareto.png. No number is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sections import write_marked  # noqa: E402

from spquant.train import load_config, load_run, train  # noqa: E402

KEEPS = (1.0, 0.7, 0.5, 0.35, 0.25)
BUDGETS = {
    # name: (data.source, train images, epochs)
    "embedded": ("embedded", 6000, 1),
    "cpu": ("full", 15000, 1),
}
COMMON = [
    "model.plan=none",
    "model.input=[32, 32]",
    "model.width=0.125",
    "model.T=4",
    "train.seed=0",
    "data.resize=crop",
    "train.lr=3e-3",
    "train.batch_size=64",
    "train.lam=0.05",
    "run.threads=1",
]
SP = ["quant.prune.predictor_bits=2"]
# warm-up / ramp of the budgeted gates (rows with keep < 1); "default" is quant.prune's own
SCHEDULES = {
    "default": [],
    # the target is reached at 20 % of training instead of 50 %: 80 % of the steps (at the higher
    # part of the cosine lr) train the network with the channels it keeps
    "early": ["quant.prune.warmup=0.05", "quant.prune.ramp=0.15"],
}
# Levers tried to close the budgeted gate's accuracy gap (``--levers``). A gated lever is a row
# fine-tuned from the finished Quant-SNN row like ``--from-quant`` (the sweep's epochs more) at its
# own ``keep``, with its own overrides; a dense lever (``keep`` None) is a reference network trained
# from scratch for the sweep's epochs.
LEVERS = {
    "distill": {
        "label": "distilled from the Quant-SNN (weight 0.5, temperature 2)",
        "keep": 0.5,
        "sets": [
            "train.distill_teacher={out}/quant",
            "train.distill_weight=0.5",
            "train.distill_temperature=2.0",
        ],
    },
    "distill-fp32": {
        "label": "distilled from the FP32 SNN (weight 0.5, temperature 2)",
        "keep": 0.5,
        "sets": [
            "train.distill_teacher={out}/fp32",
            "train.distill_weight=0.5",
            "train.distill_temperature=2.0",
        ],
    },
    "seed-1": {  # the plain fine-tune again with another seed: how far one seed decides
        "label": "seed 1 (data order and new predictors; same parent)",
        "keep": 0.5,
        "sets": ["train.seed=1"],
    },
    "no-spatial-prior": {
        "label": "spatial prior off",
        "keep": 0.5,
        "sets": ["quant.prune.spatial_prior=false"],
    },
    "early": {
        "label": "target reached at 20 % of the fine-tune (the `early` schedule)",
        "keep": 0.5,
        "sets": list(SCHEDULES["early"]),
    },
    "spread-kept": {
        # train.init_from raises every predictor bias below 3 to 3 (gates open), which collapses the
        # lower half of the default 3 +- 3 spread; at 6 +- 3 the whole spread survives
        "label": "predictor biases 6 +- 3 (the spread survives init_from)",
        "keep": 0.5,
        "sets": ["quant.prune.init_bias=6.0"],
    },
    "width-0.0625": {
        "label": "Quant-SNN at width 1/16 (dense, half the channels of every layer)",
        "keep": None,
        "sets": ["model.width=0.0625"],
    },
    "width-0.0625-ft": {  # as many epochs in all as the rows fine-tuned from the Quant-SNN
        "label": "Quant-SNN at width 1/16, fine-tuned from the row above as long again",
        "keep": None,
        "sets": ["model.width=0.0625", "train.init_from={out}/quant-width-0.0625"],
    },
}
MIN_PLOTTED = 3  # a trade-off curve needs a few gated rows


def markers(name: str = "sparsity") -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def pareto_png(marker: str = "sparsity") -> Path:
    return ROOT / "docs" / "img" / f"{marker.replace('-', '_')}_pareto.png"


def variant_name(budget: str, epochs: int | None = None, schedule: str = "default") -> str:
    """Folder of a sweep: the budget, plus the epochs and schedule when they are not the budget's."""
    return (
        budget
        + (f"-{epochs}ep" if epochs is not None else "")
        + (f"-{schedule}" if schedule != "default" else "")
    )


def rows(keeps, from_quant=(), schedule="default", epochs=1, levers=()):
    """The sweep's rows; ``from_quant``: keeps also trained from the finished Quant-SNN row
    (``train.init_from``, ``epochs`` more epochs), beside the Quant-SNN fine-tuned the same way;
    ``schedule``: a key of ``SCHEDULES`` for the budgeted rows (keep < 1); ``levers``: keys of
    ``LEVERS``."""
    sched = SCHEDULES[schedule]
    out = [("fp32", "FP32 SNN", "fp32", []), ("quant", "Quant-SNN", "quant", [])]
    for k in keeps:
        out.append(
            (
                f"keep-{k:g}",
                f"SpQuant-SNN keep {k:g}",
                "spquant",
                SP + [f"quant.prune.keep={k}"] + (sched if k < 1 else []),
            )
        )
    init = ["train.init_from={out}/quant"]
    more = f"+{epochs} epoch{'s' if epochs != 1 else ''} from the Quant-SNN"
    if from_quant or any(LEVERS[v]["keep"] is not None for v in levers):
        # the fine-tuned rows are compared with the Quant-SNN fine-tuned the same way
        out.append(("quant-ft", f"Quant-SNN, {more}", "quant", init))
    for k in from_quant:
        out.append(
            (
                f"keep-{k:g}-from-quant",
                f"SpQuant-SNN keep {k:g}, {more}",
                "spquant",
                SP + [f"quant.prune.keep={k}"] + (sched if k < 1 else []) + init,
            )
        )
    for name in levers:
        lever = LEVERS[name]
        k = lever["keep"]
        if k is None:
            out.append((f"quant-{name}", lever["label"], "quant", list(lever["sets"])))
            continue
        out.append(
            (
                f"keep-{k:g}-from-quant-{name}",
                f"SpQuant-SNN keep {k:g}, {more}, {lever['label']}",
                "spquant",
                SP + [f"quant.prune.keep={k}"] + (sched if k < 1 else []) + list(lever["sets"]) + init,
            )
        )
    return out


def overrides_for(row, budget, root, epochs=None):
    source, n, budget_epochs = BUDGETS[budget]
    epochs = budget_epochs if epochs is None else epochs
    return (
        COMMON
        + [f"data.source={source}", f"data.train_subset={n}", f"train.epochs={epochs}"]
        + ([f"data.root={root}"] if root else [])
        + row[3]
    )


def command(row, sets, out):
    return (
        f"spquant train --config mnist-dvs:{row[2]} "
        + " ".join(f"--set '{s}'" for s in sets)
        + f" --out {out}"
    )


def train_row(row, budget, root, out_root: Path, epochs=None, shown_root=None) -> dict:
    raw = overrides_for(row, budget, root, epochs)
    sets = [s.format(out=out_root) for s in raw]
    run_dir = out_root / row[0]
    if not (run_dir / "run.json").is_file():
        print(f"== {row[1]}: {command(row, sets, run_dir)}", flush=True)
        t0 = time.time()
        train(
            load_config(f"mnist-dvs:{row[2]}", sets),
            run_dir,
            resume=(run_dir / "checkpoints").is_dir(),
            progress=False,
        )
        (run_dir / "experiment.json").write_text(json.dumps({"wall_seconds": time.time() - t0}))
    run = json.loads((run_dir / "run.json").read_text())
    shown = [s for s in raw if not s.startswith("data.root=")]
    shown_root = shown_root or f"runs/sparsity/{budget}"
    run["command"] = command(row, [s.format(out=shown_root) for s in shown], f"{shown_root}/{row[0]}")
    run["row"], run["label"], run["dir"] = row[0], row[1], str(run_dir)
    exp = run_dir / "experiment.json"
    run["wall_seconds"] = json.loads(exp.read_text())["wall_seconds"] if exp.is_file() else None
    return run


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _cost_on_test(run: dict, n_cost: int):
    """The run's model, config and test split, and ``measure_cost`` on its first ``n_cost`` test
    samples (batches of 100); ``n_cost`` capped at the split's size."""
    from spquant.cost import measure_cost
    from spquant.train.data import load_split

    loaded = load_run(run["dir"])
    model, config = loaded["model"].eval(), loaded["config"]
    test = load_split(config, "test")
    n_cost = min(n_cost, len(test))
    T = config.model.T
    batches = [test.batch(torch.arange(s, min(s + 100, n_cost)), T)[0] for s in range(0, n_cost, 100)]
    return model, config, test, n_cost, measure_cost(model, batches)


def measure_dense(run: dict, n_cost: int) -> dict:
    """A dense reference row's effective operations on ``n_cost`` test samples, over its own dense
    MACs (no gates: ``dense_mac_reduction`` is 1); ``section`` rescales them to the Quant-SNN's."""
    _, _, _, n_cost, mc = _cost_on_test(run, n_cost)
    return {"effective_op_reduction": mc.effective_op_reduction, "cost_samples": n_cost}


def measure_row(run: dict, n_cost: int, n_speed: int, repeats: int) -> dict:
    """Three accountings on ``n_cost`` test samples; interpreter parity and speed on ``n_speed``."""
    from spquant.deploy import Interpreter, fold_model, input_encoding

    model, config, test, n_cost, mc = _cost_on_test(run, n_cost)
    T = config.model.T
    out = {
        k: getattr(mc, k)
        for k in (
            "dense_mac_reduction",
            "effective_op_reduction",
            "paper_convention_reduction",
            "kept_fraction",
            "kept_fraction_by_layer",
        )
    }
    out["paper_convention_batch_sizes"] = mc.paper_convention["batch_sizes"]
    out["cost_samples"] = n_cost
    enc = input_encoding(config)
    program = fold_model(
        model, enc["input_shape"], input_bits=enc["input_bits"], input_scale=enc["input_scale"]
    )
    interp = Interpreter(program)
    n_speed = min(n_speed, len(test))
    x, _ = test.batch(torch.arange(0, n_speed), T)[:2]
    codes = (
        np.moveaxis(test.inputs[:n_speed].numpy(), 1, 0) if not test.static else test.inputs[:n_speed].numpy()
    )
    t_arg = T if test.static else None
    ref = interp.run(codes[:, :32] if not test.static else codes[:32], t_arg, path="reference")
    fast = interp.run(codes[:, :32] if not test.static else codes[:32], t_arg, path="fast")
    out["fast_equals_reference_32"] = bool(np.array_equal(ref, fast))
    skipping = getattr(interp, "skipping", None)
    if skipping is not None:
        out["skip_paths"] = interp.calibrate(codes, t_arg, repeats=2)
    fns = {"fast": lambda: interp.run(codes, t_arg, path="fast")}
    if skipping is not None:

        def no_skip():
            interp.skipping = False
            try:
                interp.run(codes, t_arg, path="fast")
            finally:
                interp.skipping = True

        fns["fast_no_skip"] = no_skip
        interp.skipping = False
        out["no_skip_equals_fast"] = bool(
            np.array_equal(
                interp.run(codes, t_arg, path="fast"),
                (setattr(interp, "skipping", True), interp.run(codes, t_arg, path="fast"))[1],
            )
        )
    with torch.no_grad():
        fns["torch_float_eval"] = lambda: model(x)
        for f in fns.values():  # warm-up
            f()
        times = {k: [] for k in fns}
        for _ in range(repeats):  # alternate so load changes hit every variant alike
            for k, f in fns.items():
                times[k] += _timed(f, 1)
    out["speed_samples"] = n_speed
    out["load_avg_1min"] = os.getloadavg()[0]
    out["seconds"] = {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()
    }
    med = {k: v["median"] for k, v in out["seconds"].items()}
    out["fast_vs_torch"] = med["torch_float_eval"] / med["fast"]
    if "fast_no_skip" in med:
        out["fast_vs_no_skip"] = med["fast_no_skip"] / med["fast"]
    return out


def _pct(v):
    return f"{100 * v:.2f} %"


def _load(measured) -> str:
    loads = [m["load_avg_1min"] for m in measured.values() if "load_avg_1min" in m]
    if not loads:
        return "load not recorded"
    return f"1-minute load average {min(loads):.1f}-{max(loads):.1f} during the timings"


def _flags(args) -> str:
    """The non-default flags of this invocation that change the table (for the 'Generated by' line)."""
    out = ""
    if getattr(args, "keeps", None) and args.keeps != ",".join(f"{k:g}" for k in KEEPS):
        out += f" --keeps {args.keeps}"
    if getattr(args, "from_quant", ""):
        out += f" --from-quant {args.from_quant}"
    if getattr(args, "levers", ""):
        out += f" --levers {args.levers}"
    if getattr(args, "epochs", None) is not None:
        out += f" --epochs {args.epochs}"
    if getattr(args, "schedule", "default") != "default":
        out += f" --schedule {args.schedule}"
    if getattr(args, "marker", "sparsity") != "sparsity":
        out += f" --results {Path(args.results).name if Path(args.results).parent == ROOT else args.results}"
        out += f" --marker {args.marker}"
    return out


def section(runs, measured, budget, args) -> list[str]:
    src, n, epochs = BUDGETS[budget]
    epochs = epochs if getattr(args, "epochs", None) is None else args.epochs
    schedule = getattr(args, "schedule", "default")
    marker = getattr(args, "marker", "sparsity")
    begin, end = markers(marker)
    by = {r["row"]: r for r in runs}
    fp, q = by.get("fp32"), by.get("quant")
    gate = "with its defaults" + (
        ""
        if schedule == "default"
        else f" except the `{schedule}` schedule (`" + "`, `".join(SCHEDULES[schedule]) + "`)"
    )
    title = (
        "## Sparsity budget sweep (`quant.prune.keep`)"
        if marker == "sparsity"
        else f"#### Measured: {epochs} epoch(s), `{schedule}` schedule (`experiments/sparsity.py`)"
    )
    L = [
        begin,
        "",
        title,
        "",
        f"Generated by `python experiments/sparsity.py --budget {budget}{_flags(args)}`. "
        f"Budget: `{src}` MNIST as emulated events, "
        f"{n:,} training images, {epochs} epoch(s), VGG-9 width 0.125 at 32x32, T = 4, batch 64, Adam lr 3e-3 cosine, seed 0, "
        f"1 torch thread, on a shared 2-core machine ({_load(measured)}). Ternary gate predictors; below keep 1 the budgeted "
        f"gate {gate} (target ranked over the batch, predictor lr x10). Accuracy on the run's whole test split; "
        f"operation counts on the first {args.cost_samples} test samples; interpreter timings on {args.speed_samples} test samples "
        f"(median of {args.repeats} alternating repeats, min-max in brackets).",
        "",
    ]
    L += [
        "| row | accuracy | vs FP32 | vs Quant | kept fraction (gated layers) | dense MAC reduction | effective op reduction | "
        "authors' convention (B) | interpreter fast path | fast vs skipping off | fast vs PyTorch float eval | train wall |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        acc = r["metrics"]["test_accuracy"]
        dfp = f"{100 * (acc - fp['metrics']['test_accuracy']):+.2f} pt" if fp else "-"
        dq = f"{100 * (acc - q['metrics']['test_accuracy']):+.2f} pt" if q else "-"
        m = measured.get(r["row"])
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r.get("wall_seconds") else "-"
        if m is None and r["row"].startswith("keep-"):
            rm = r["metrics"]
            L.append(
                f"| {r['label']} | {_pct(acc)} | {dfp} | {dq} | {rm.get('kept_fraction', float('nan')):.3f}* | "
                f"{rm.get('dense_mac_reduction', float('nan')):.2f}x* | {rm.get('effective_op_reduction', float('nan')):.2f}x* | "
                f"{rm.get('paper_convention_reduction', float('nan')):.2f}x* | not measured | - | - | {wall} |"
            )
            continue
        if m is None:
            macs = r["metrics"].get("dense_macs_per_step")
            ref = q["metrics"].get("dense_macs_per_step") if q else None
            kept, red = "1.000 (dense)", "1.00x"
            eff = "-"
            if macs and ref and macs != ref:  # a narrower dense network: its MACs against the Quant-SNN's
                kept, red = f"{macs / ref:.3f} (dense, narrower)", f"{ref / macs:.2f}x (all layers)"
                if "dense_cost" in r:
                    eff = f"{r['dense_cost']['effective_op_reduction'] * ref / macs:.2f}x"
            L.append(
                f"| {r['label']} | {_pct(acc)} | {dfp} | {dq} | {kept} | {red} | {eff} | - | - | - | - | {wall} |"
            )
            continue
        s = m["seconds"]
        fast = f"{m['speed_samples'] / s['fast']['median']:.0f} samples/s"
        nos = f"{m['fast_vs_no_skip']:.2f}x" if "fast_vs_no_skip" in m else "n/a (no skipping path)"
        tor = (
            f"{m['fast_vs_torch']:.2f}x [{s['torch_float_eval']['min'] / s['fast']['max']:.2f}-"
            f"{s['torch_float_eval']['max'] / s['fast']['min']:.2f}]"
        )
        L.append(
            f"| {r['label']} | {_pct(acc)} | {dfp} | {dq} | {m['kept_fraction']:.3f} | {m['dense_mac_reduction']:.2f}x | "
            f"{m['effective_op_reduction']:.2f}x | {m['paper_convention_reduction']:.2f}x (B={m['paper_convention_batch_sizes']}) | "
            f"{fast} | {nos} | {tor} | {wall} |"
        )
    starred = any(r["row"].startswith("keep-") and r["row"] not in measured for r in runs)
    L += [
        "",
        "\\* from the run's own summary (first 200 test samples, batches of 100), not re-measured on "
        f"{args.cost_samples} samples; no interpreter timing."
        if starred
        else "",
        "",
        "Kept fraction per gated layer:",
        "",
        "| row | " + " | ".join(next(iter(measured.values()))["kept_fraction_by_layer"]) + " |"
        if measured
        else "",
    ]
    if measured:
        names = list(next(iter(measured.values()))["kept_fraction_by_layer"])
        L.append("| --- |" + " ---: |" * len(names))
        for r in runs:
            m = measured.get(r["row"])
            if m:
                L.append(
                    f"| {r['label']} | "
                    + " | ".join(f"{m['kept_fraction_by_layer'].get(k, 1.0):.3f}" for k in names)
                    + " |"
                )
    L += [
        "",
        "Targets (accuracy within 1.0 pt of the FP32 SNN and 0.5 pt of the Quant-SNN of this budget):",
        "",
    ]
    if fp and q:
        ok = [
            r
            for r in runs
            if r["row"] in measured
            and r["metrics"]["test_accuracy"] >= fp["metrics"]["test_accuracy"] - 0.010 - 1e-9
            and r["metrics"]["test_accuracy"] >= q["metrics"]["test_accuracy"] - 0.005 - 1e-9
        ]
        if ok:
            best_d = max(ok, key=lambda r: measured[r["row"]]["dense_mac_reduction"])
            best_e = max(ok, key=lambda r: measured[r["row"]]["effective_op_reduction"])
            d, e = (
                measured[best_d["row"]]["dense_mac_reduction"],
                measured[best_e["row"]]["effective_op_reduction"],
            )
            L.append(f"* rows within the accuracy bounds: {', '.join(r['label'] for r in ok)}")
            L.append(
                f"* `dense_mac_reduction` >= 2.5x: best {d:.2f}x ({best_d['label']}): {'met' if d >= 2.5 else '**missed**'}"
            )
            L.append(
                f"* `effective_op_reduction` >= 8x: best {e:.2f}x ({best_e['label']}): {'met' if e >= 8 else '**missed**'}"
            )
        else:
            L.append(
                "* no SpQuant row is within the accuracy bounds: both reduction targets **missed** at this budget"
            )
        ft = by.get("quant-ft")
        tuned = [r for r in runs if "-from-quant" in r["row"] and r["row"] in measured]
        if ft and tuned:
            near = [
                r
                for r in tuned
                if r["metrics"]["test_accuracy"] >= ft["metrics"]["test_accuracy"] - 0.005 - 1e-9
            ]
            L.append(
                f"* the rows fine-tuned from the Quant-SNN trained as many epochs as {ft['label']} "
                f"({_pct(ft['metrics']['test_accuracy'])}); within 0.5 pt of it: "
                + (", ".join(r["label"] for r in near) if near else "none")
            )
    for r in runs:
        m = measured.get(r["row"])
        if m and "fast_vs_no_skip" in m:
            L.append(
                f"* {r['label']}: interpreter fast path {m['fast_vs_no_skip']:.2f}x vs skipping disabled (target 2x: "
                f"{'met' if m['fast_vs_no_skip'] >= 2 else '**missed**'}), {m['fast_vs_torch']:.2f}x vs PyTorch float eval "
                f"(target 3x: {'met' if m['fast_vs_torch'] >= 3 else '**missed**'}), bit-identical to the reference on "
                f"32 samples: {m['fast_equals_reference_32']}; skipping paths chosen: "
                f"{', '.join(sorted(set(m.get('skip_paths', {}).values()))) or '-'}"
            )
    over = [
        f"keep {r['row'][5:]}: {r['metrics'].get('kept_fraction', float('nan')):.3f}"
        for r in runs
        if r["row"].startswith("keep-") and r["row"] != "keep-1"
    ]
    if over:
        half = by.get("keep-0.5")
        verdict = ""
        if half is not None:
            kf = half["metrics"].get("kept_fraction", float("nan"))
            verdict = f"; `kept_fraction` within 0.1 of 0.5 at keep 0.5: {'met' if abs(kf - 0.5) <= 0.1 else '**missed**'}"
        L += [
            "",
            "Kept fraction reached vs asked (from each run's summary; gates and membrane prior together): "
            + "; ".join(over)
            + verdict
            + ".",
        ]
    if len(measured) >= MIN_PLOTTED:
        png = pareto_png(marker)
        rel = os.path.relpath(png, Path(getattr(args, "results", ROOT / "RESULTS.md")).resolve().parent)
        L += ["", f"![{png.stem}]({rel})"]
    L += ["", "Commands:", "", "```"]
    L += [r["command"] for r in runs] + ["```", "", end]
    return L


def plot(runs, measured, png: Path, line: bool = True):
    """Accuracy against effective operations; ``line`` joins the gated rows (a sweep of one knob),
    else they are separate points (rows that differ in more than the budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs, ys, labels = [], [], []
    for r in runs:
        m = measured.get(r["row"])
        if m:
            xs.append(1 / m["effective_op_reduction"])
            ys.append(100 * r["metrics"]["test_accuracy"])
            labels.append(r["row"])
    pts = sorted(zip(xs, ys, labels))
    xs, ys, labels = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
    ax.plot(
        xs, ys, "o-" if line else "o", color="#2a7", label="SpQuant-SNN" + (" (keep sweep)" if line else "")
    )
    ref = next((r for r in runs if r["row"] == "quant"), None)
    shown = False
    for r in runs:  # dense narrower references, against the Quant-SNN's dense MACs
        if "dense_cost" in r and ref and r["metrics"].get("dense_macs_per_step"):
            ratio = ref["metrics"]["dense_macs_per_step"] / r["metrics"]["dense_macs_per_step"]
            x_, y_ = (
                1 / (r["dense_cost"]["effective_op_reduction"] * ratio),
                100 * r["metrics"]["test_accuracy"],
            )
            ax.plot([x_], [y_], "s", color="#a52", label=None if shown else "narrower dense Quant-SNN")
            shown = True
            ax.annotate(r["row"], (x_, y_), fontsize=7, xytext=(3, -9), textcoords="offset points")
    for x_, y_, lab in zip(xs, ys, labels):
        ax.annotate(lab, (x_, y_), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for r, c in (
        (next((r for r in runs if r["row"] == "fp32"), None), "#777"),
        (next((r for r in runs if r["row"] == "quant"), None), "#37a"),
    ):
        if r:
            ax.axhline(
                100 * r["metrics"]["test_accuracy"], color=c, ls="--", lw=1, label=f"{r['label']} (dense)"
            )
    ax.set_xlabel("effective operations / dense MACs")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def write_results(lines: list[str], path: Path, marker: str = "sparsity"):
    write_marked(path, lines, *markers(marker))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="embedded")
    ap.add_argument("--keeps", default=",".join(f"{k:g}" for k in KEEPS))
    ap.add_argument(
        "--from-quant",
        default="",
        help="keeps also trained from the finished Quant-SNN row (the sweep's epochs more)",
    )
    ap.add_argument(
        "--levers",
        default="",
        help=f"comma-separated extra rows from LEVERS ({', '.join(LEVERS)})",
    )
    ap.add_argument("--root", default=None, help="MNIST IDX folder for --budget cpu (data.root)")
    ap.add_argument("--out", default="runs/sparsity")
    ap.add_argument("--cost-samples", type=int, default=500)
    ap.add_argument("--speed-samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument(
        "--write-only",
        action="store_true",
        help="no training or measuring: write RESULTS.md from the "
        "finished rows (run.json) and their stored measurements (sparsity_measure.json)",
    )
    ap.add_argument("--results", default=str(ROOT / "RESULTS.md"))
    ap.add_argument(
        "--marker", default="sparsity", help="the section between <!-- MARKER:begin/end --> of --results"
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every row (default: the budget's)")
    ap.add_argument(
        "--schedule", choices=sorted(SCHEDULES), default="default", help="budgeted gates' schedule"
    )
    ap.add_argument("--only", default="", help="comma-separated rows to train (implies --train-only)")
    ap.add_argument(
        "--no-train",
        action="store_true",
        help="leave out the rows not trained yet; measure and write the rest",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    keeps = [float(k) for k in args.keeps.split(",")]
    sweep = variant_name(args.budget, args.epochs, args.schedule)
    out_root = Path(args.out) / sweep
    todo = rows(
        keeps,
        [float(k) for k in args.from_quant.split(",") if k.strip()],
        args.schedule,
        args.epochs or BUDGETS[args.budget][2],
        [v for v in args.levers.split(",") if v.strip()],
    )
    if args.only:
        only = set(args.only.split(","))
        todo, args.train_only = [r for r in todo if r[0] in only], True
    if args.write_only or args.no_train:
        todo = [r for r in todo if (out_root / r[0] / "run.json").is_file()]
    runs = [
        train_row(r, args.budget, args.root, out_root, args.epochs, f"runs/sparsity/{sweep}") for r in todo
    ]
    for r in runs:
        print(f"{r['label']}: {100 * r['metrics']['test_accuracy']:.2f} %", flush=True)
    if args.train_only:
        return 0
    measured = {}
    for r in runs:
        if r["row"].startswith("keep-"):
            path = Path(r["dir"]) / "sparsity_measure.json"
            if path.is_file():
                measured[r["row"]] = json.loads(path.read_text())
            elif args.write_only:
                continue
            else:
                measured[r["row"]] = measure_row(r, args.cost_samples, args.speed_samples, args.repeats)
                path.write_text(json.dumps(measured[r["row"]], indent=1))
            print(
                r["row"],
                json.dumps({k: v for k, v in measured[r["row"]].items() if k != "kept_fraction_by_layer"}),
                flush=True,
            )
    for r in runs:
        if r["row"].startswith("quant-") and r["row"][len("quant-") :] in LEVERS:
            path = Path(r["dir"]) / "sparsity_dense_measure.json"
            if not path.is_file() and not args.write_only:
                path.write_text(json.dumps(measure_dense(r, args.cost_samples), indent=1))
            if path.is_file():
                r["dense_cost"] = json.loads(path.read_text())
    if len(measured) >= MIN_PLOTTED:
        plot(runs, measured, pareto_png(args.marker), line=not args.levers)
    write_results(section(runs, measured, args.budget, args), Path(args.results), args.marker)
    print(f"wrote {args.results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
