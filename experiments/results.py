"""Regenerate RESULTS.md: the paper's table on real data (full MNIST, static and as emulated
events), the integer-interpreter row, and the ablations on the event data.

    python experiments/results.py                      # everything (resumable: finished rows are reused)
    python experiments/results.py --rows events        # one table: static | events | ablations | all
    python experiments/results.py --budget quick       # a smoke-sized budget (minutes)
    python experiments/results.py --seeds 0,1,2        # the main rows over seeds: their own section

With ``--seeds`` the static and event rows (FP32 / Quant-SNN / SpQuant-SNN) are trained once per
seed (``runs/results/<row>/seed<k>``, ``train.seed=k``: initialisation, batch order and the
training subset) and only the section between the ``results_seeds`` markers of RESULTS.md is
rewritten (mean +- sd per row, the paired drop vs the FP32 run of the same seed and its 95 %
t-interval); the one-seed tables and every other section stay as they are.

Every row is one ``spquant train`` run (``runs/results/<row>``), so an interrupted invocation
continues where it stopped (``--resume`` semantics of spquant.train). RESULTS.md and the plots in
docs/img/results_*.png are written from the run folders only: no number is typed by hand.
Full MNIST is read from ``$SPQUANT_DATA/mnist`` (or ``--set data.root=...``).
The same script runs the paper-scale recipes unchanged on a GPU machine: ``--scale paper``
(VGG-9 width 1.0 at 48x48, T = 10, the recipes' epochs) with ``--set run.device=cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import torch  # noqa: E402
from sections import write_marked  # noqa: E402

from spquant.train import load_config, load_run, train  # noqa: E402

# -- the experiment plan ------------------------------------------------------------------------
# The CPU-scale model: the full VGG-9 plan at width 1/8 (8-16-A-32-32-A-64-64-A-64-64-A-FC) on
# 32x32 inputs (MNIST padded 28 -> 32; emulated events: the 34x34 sensor centre-cropped to 32x32,
# which keeps the frames integer counts for the integer interpreter).
BUDGETS = {
    # name: (train images, epochs, T static, T events)
    "smoke": (256, 1, 2, 2),
    "quick": (2000, 1, 2, 4),
    "cpu": (15000, 1, 2, 4),
    "cpu-long": (60000, 2, 2, 4),
}

COMMON = ["model.plan=none", "model.input=[32, 32]", "run.progress=true", "run.log_every=50", "train.seed=0"]
STATIC = ("mnist", ["data.resize=pad", "train.lr=3e-3", "train.batch_size=64"])
# lam = 0.05 on the events too: with the authors' lam = 0.9 the MSE-to-phi term dominates and a
# one-epoch CPU budget left the FP32 SNN at 71.7 % (measured, first attempt of this script); the
# paper-scale recipes keep lam = 0.9.
EVENTS = ("mnist-dvs", ["data.resize=crop", "train.lr=3e-3", "train.batch_size=64", "train.lam=0.05"])
# SpQuant rows: ternary gate predictors (packed 1.6 bits, like the conv weights they gate), so the
# predictors do not eat the memory saving; the 8-bit default is an ablation row.
SP = ["quant.prune.predictor_bits=2"]

MAIN_ROWS = {
    "static": [
        ("static-fp32", "FP32 SNN", STATIC, "fp32", []),
        ("static-quant", "Quant-SNN", STATIC, "quant", []),
        ("static-spquant", "SpQuant-SNN", STATIC, "spquant", SP),
    ],
    "events": [
        ("events-fp32", "FP32 SNN", EVENTS, "fp32", []),
        ("events-quant", "Quant-SNN", EVENTS, "quant", []),
        ("events-spquant", "SpQuant-SNN", EVENTS, "spquant", SP),
    ],
    "ablations": [
        (
            "abl-ste",
            "Q gradient: straight-through (not stacked)",
            EVENTS,
            "spquant",
            SP + ["quant.membrane_grad=ste"],
        ),
        (
            "abl-fixed-threshold",
            "fixed threshold (not learnable)",
            EVENTS,
            "spquant",
            SP + ["quant.learn_threshold=false"],
        ),
        (
            "abl-no-prior",
            "membrane prior off",
            EVENTS,
            "spquant",
            SP + ["quant.prune.channel_prior=false", "quant.prune.spatial_prior=false"],
        ),
        (
            "abl-no-gate",
            "learned gate off (prior only)",
            EVENTS,
            "spquant",
            SP + ["quant.prune.learned_gate=false"],
        ),
        ("abl-5level", "5-level membrane [-3, 1]", EVENTS, "spquant", SP + ["quant.membrane_lb=-3"]),
        ("abl-4bit", "4-bit weights (SAWB)", EVENTS, "spquant", SP + ["quant.weight_bits=4"]),
        (
            "abl-mass-0.5",
            "gate mass target 0.5 (prunes harder)",
            EVENTS,
            "spquant",
            SP + ["quant.prune.mass=0.5"],
        ),
        ("abl-predictor-8bit", "8-bit gate predictors (the library default)", EVENTS, "spquant", []),
    ],
}
PAPER_SCALE = {
    # the same rows on the paper's recipes (GPU): VGG-9 width 1.0, the recipes' own T, size and epochs
    "static": ("resnet19-cifar10", []),
    "events": ("vgg9-cifar10dvs", []),
}


def row_config(row, budget: str, width: float, extra_sets: list[str]):
    row_id, label, (recipe, base_sets), mode, sets = row
    n_train, epochs, t_static, t_events = BUDGETS[budget]
    T = t_static if recipe == "mnist" else t_events
    overrides = (
        COMMON
        + base_sets
        + [
            f"model.width={width}",
            f"model.T={T}",
            f"data.train_subset={n_train}",
            f"train.epochs={epochs}",
        ]
        + sets
        + extra_sets
    )
    return load_config(f"{recipe}:{mode}", overrides), overrides


def command_for(row, overrides) -> str:
    recipe, mode = row[2][0], row[3]
    return (
        f"spquant train --config {recipe}:{mode} "
        + " ".join(f"--set '{o}'" for o in overrides)
        + f" --out runs/results/{row[0]}"
    )


def run_row(row, out_root: Path, budget: str, width: float, extra_sets: list[str]) -> dict:
    """Train (or resume, or reuse) one row; returns its run.json plus the experiment record."""
    config, overrides = row_config(row, budget, width, extra_sets)
    run_dir = out_root / row[0]
    record_path = run_dir / "experiment.json"
    if not (run_dir / "run.json").is_file():
        t0, load0 = time.time(), os.getloadavg()
        before = json.loads(record_path.read_text())["wall_seconds"] if record_path.is_file() else 0.0
        run_dir.mkdir(parents=True, exist_ok=True)
        # record the wall time spent so far even if this invocation is interrupted
        record_path.write_text(json.dumps({"row": row[0], "wall_seconds": before, "complete": False}))
        print(f"\n== {row[0]}: {row[1]}\n   {command_for(row, overrides)}", flush=True)
        train(config, run_dir, resume=True)  # resume: fresh when no checkpoint yet
        record = {
            "row": row[0],
            "label": row[1],
            "command": command_for(row, overrides),
            "overrides": overrides,
            "budget": budget,
            "wall_seconds": before + time.time() - t0,
            "complete": True,
            "threads": torch.get_num_threads(),
            "load_start": load0,  # 1/5/15-minute load averages of the shared machine
            "load_end": os.getloadavg(),
        }
        record_path.write_text(json.dumps(record, indent=1))
    run = json.loads((run_dir / "run.json").read_text())
    run["experiment"] = json.loads(record_path.read_text())
    run["experiment"].setdefault("command", command_for(row, overrides))
    run["row"], run["label"], run["dir"] = row[0], row[1], str(run_dir)
    return run


# -- the main rows over seeds ----------------------------------------------------------------------
SEEDS_START, SEEDS_END = "<!-- results_seeds:start -->", "<!-- results_seeds:end -->"


def seed_row(row, seed: int):
    """The row trained with ``train.seed=seed`` in its own folder ``<row>/seed<seed>``."""
    row_id, label, data, mode, sets = row
    return (f"{row_id}/seed{seed}", label, data, mode, sets + [f"train.seed={seed}"])


def seeds_table(runs: dict[int, list[dict]]) -> list[str]:
    """One table of a data set: ``runs`` maps seed -> its run records (FP32 first, as MAIN_ROWS)."""
    from quant_results import _ms, _noise, t_interval

    seeds = sorted(runs)
    by_label: dict[str, dict[int, dict]] = {}
    for s in seeds:
        for r in runs[s]:
            by_label.setdefault(r["label"], {})[s] = r["metrics"]
    fp32 = next(iter(by_label.values()))
    lines = [
        "| row | seeds | accuracy % (mean +- sd) | per seed | drop vs FP32 of the same seed, pt (mean +- sd) | "
        "95 % t-interval of the drop | memory reduction (packed) | FLOPs reduction (mean) |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for i, (label, ms) in enumerate(by_label.items()):
        accs = [100 * ms[s]["test_accuracy"] for s in seeds if s in ms]
        drops = [
            100 * (fp32[s]["test_accuracy"] - ms[s]["test_accuracy"]) for s in seeds if s in ms and s in fp32
        ]
        per_seed = ", ".join(f"{100 * ms[s]['test_accuracy']:.2f}" for s in seeds if s in ms)
        if i == 0:
            drop, ci = "0 (reference)", ""
        else:
            iv = t_interval(drops)
            drop = _ms(drops)
            ci = f"[{iv[0]:+.2f}, {iv[1]:+.2f}]: {_noise(drops)}" if iv else _noise(drops)
        mem = [
            ms[s]["memory_reduction_packed"] for s in seeds if s in ms and "memory_reduction_packed" in ms[s]
        ]
        mem = f"{sum(mem) / len(mem):.2f}x" if mem else "1.00x"
        fl = [ms[s]["flops_reduction"] for s in seeds if s in ms and "flops_reduction" in ms[s]]
        fl = f"{sum(fl) / len(fl):.2f}x" if fl else "1.00x (dense)"
        lines.append(f"| {label} | {len(accs)} | {_ms(accs)} | {per_seed} | {drop} | {ci} | {mem} | {fl} |")
    labels = list(by_label)
    if len(labels) >= 3:
        a, b = by_label[labels[2]], by_label[labels[1]]
        ds = [100 * (a[s]["test_accuracy"] - b[s]["test_accuracy"]) for s in seeds if s in a and s in b]
        iv = t_interval(ds)
        lines += [
            "",
            f"{labels[2]} - {labels[1]} accuracy, paired by seed (positive: {labels[2]} more accurate): {_ms(ds)} pt"
            + (
                f", 95 % t-interval [{iv[0]:+.2f}, {iv[1]:+.2f}] ({_noise(ds)})."
                if iv
                else f" ({_noise(ds)})."
            ),
        ]
    return lines + [""]


def seeds_section(tables: dict[str, dict[int, list[dict]]], args) -> list[str]:
    n_train, epochs, t_static, t_events = BUDGETS[args.budget]
    seeds = sorted({s for t in tables.values() for s in t})
    walls = [r["experiment"]["wall_seconds"] for t in tables.values() for rs in t.values() for r in rs]
    lines = [
        SEEDS_START,
        f"## The main rows over {len(seeds)} seed(s)",
        "",
        f"Generated by `python experiments/results.py --seeds {','.join(map(str, seeds))}"
        + (f" --budget {args.budget}" if args.budget != "cpu" else "")
        + "` from the run folders `runs/results/<row>/seed<k>` (every number is read from a run).",
        "",
        f"* The rows and budget `{args.budget}` of the one-seed tables above ({n_train:,} training images, {epochs} epoch(s), "
        f"T = {t_static} static / {t_events} events, width {args.width}); `train.seed=k` sets the initialisation, the batch "
        "order and which training images form the subset. Each run from scratch, 1 torch thread.",
        "* Accuracy: mean +- sample standard deviation over the seeds. Drop: FP32 accuracy minus the row's, paired by seed, "
        "then mean +- sd; *within noise* when the 95 % t-interval of the paired drops contains 0 "
        "(helpers of experiments/quant_results.py).",
        "* Memory reduction: packed convention of the tables above (same architecture and bits for every seed).",
        "",
    ]
    for name, title in (("static", "MNIST, static images"), ("events", "MNIST as emulated events")):
        if tables.get(name):
            ss = sorted(tables[name])
            lines += [f"### {title} (seeds {', '.join(map(str, ss))})", ""]
            lines += seeds_table(tables[name])
    loads = [
        r["experiment"][k][0]
        for t in tables.values()
        for rs in t.values()
        for r in rs
        for k in ("load_start", "load_end")
        if k in r["experiment"]
    ]
    lines += [
        f"Training wall time summed over the {len(walls)} runs: {sum(walls) / 60:.1f} min"
        + (
            f" (1-minute load average of the 2-core machine at the runs' starts and ends: {min(loads):.1f} to {max(loads):.1f})."
            if loads
            else "."
        ),
        "",
        SEEDS_END,
    ]
    return lines


def run_seeds(args, seeds: list[int], out_root: Path) -> int:
    wanted = ["static", "events"] if args.rows in ("all", "ablations") else [args.rows]
    tables: dict[str, dict[int, list[dict]]] = {}
    for name in wanted:
        for seed in seeds:
            for row in MAIN_ROWS[name]:
                if args.finished_only and not (out_root / seed_row(row, seed)[0] / "run.json").is_file():
                    continue
                r = run_row(seed_row(row, seed), out_root, args.budget, args.width, args.set)
                tables.setdefault(name, {}).setdefault(seed, []).append(r)
    if args.no_write:
        return 0
    path = Path(args.results)
    write_marked(path, seeds_section(tables, args), SEEDS_START, SEEDS_END)
    print(f"wrote {path}")
    return 0


def integer_row(run: dict, max_ref: int = 200) -> dict:
    """Export the run to the integer program and run the interpreter on the run's whole test split.

    Also checks, on the first ``max_ref`` test samples, that the fast path equals the numpy reference
    path (bit-exact) and counts the operations the reference path executes."""
    import numpy as np

    from spquant.deploy import Interpreter, fold_model, save
    from spquant.deploy.program import input_encoding
    from spquant.train.data import load_split

    loaded = load_run(run["dir"])
    model, config = loaded.model.eval(), loaded.config
    enc = input_encoding(config)
    program = fold_model(
        model, enc["input_shape"], input_bits=enc["input_bits"], input_scale=enc["input_scale"]
    )
    spq = Path(run["dir"]) / "model.spq"
    save(program, spq)
    test = load_split(config, "test")
    interp = Interpreter(program)
    T = config.model.T
    codes = test.inputs.numpy()
    labels = test.labels.numpy()
    static = test.static
    t0 = time.time()
    preds, fq_preds = [], []
    for i in range(0, len(labels), 250):
        xb = codes[i : i + 250]
        preds.append(interp.predict(xb, T=T) if static else interp.predict(np.moveaxis(xb, 1, 0)))
        with torch.no_grad():
            fq_preds.append(
                model(test.batch(torch.arange(i, min(i + 250, len(labels))), T)[0]).mean(0).argmax(-1).numpy()
            )
    seconds = time.time() - t0
    pred, fq = np.concatenate(preds), np.concatenate(fq_preds)
    ref_x = codes[:max_ref] if static else np.moveaxis(codes[:max_ref], 1, 0)
    fast = interp.run(ref_x, T if static else None, path="fast")
    ref = interp.run(ref_x, T if static else None, path="reference")
    counts = interp.last_counts.as_dict()
    return {
        "accuracy": float((pred == labels).mean()),
        "fake_quant_accuracy": float((fq == labels).mean()),
        "prediction_agreement_with_fake_quant": float((pred == fq).mean()),
        "fast_equals_reference": bool(np.array_equal(fast, ref)),
        "reference_checked_samples": int(min(max_ref, len(labels))),
        "reference_ops_per_sample": {k: v / min(max_ref, len(labels)) for k, v in counts.items()},
        "file_bytes": spq.stat().st_size,
        "interpreter_seconds": seconds,
        "samples": int(len(labels)),
    }


# -- tables, plots, RESULTS.md --------------------------------------------------------------------
def _interpreter_reduction(result: dict) -> str:
    """The interpreter's OWN count (reference path: dense / kept MACs it executed), not the PyTorch
    measurement of the same model; gate predictors are not in it (they run as integer tables)."""
    ops = result["reference_ops_per_sample"]
    return f"{ops['dense_macs'] / max(ops['kept_macs'], 1):.2f}x (interpreter count)"


def _bits(m: dict) -> tuple[str, str]:
    if m["mode"] == "fp32":
        return "32", "32"
    levels = m.get("membrane_levels") or 3
    import math

    return (
        f"{m['weight_bits']} ({m['first_bits']}/{m['last_bits']} first/last)",
        f"{math.log2(levels):.2f} ({levels} levels)",
    )


def main_table(runs: list[dict], integer: dict | None) -> list[str]:
    fp32 = next(r for r in runs if r["metrics"]["mode"] == "fp32")
    base_acc = fp32["metrics"]["test_accuracy"]
    base_mem = fp32["metrics"]["total_mb_fp32"]
    lines = [
        "| row | weight bits | membrane bits | weight MB | membrane MB | total MB | memory reduction (packed / paper's 2-bit) | FLOPs reduction | accuracy | drop vs FP32 | wall time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        m = r["metrics"]
        wb, ub = _bits(m)
        acc = m["test_accuracy"]
        flops = f"{m['flops_reduction']:.2f}x" if "flops_reduction" in m else "1.00x (dense)"
        lines.append(
            f"| {r['label']} | {wb} | {ub} | {m['weight_mb_packed']:.4f} | {m['membrane_mb_packed']:.4f} | {m['total_mb_packed']:.4f} | "
            f"{base_mem / m['total_mb_packed']:.2f}x / {base_mem / m['total_mb']:.2f}x | {flops} | {100 * acc:.2f} % | {100 * (base_acc - acc):+.2f} pt | "
            f"{r['experiment']['wall_seconds'] / 60:.1f} min |"
        )
    if integer is not None:
        r = integer["run"]
        m, i = r["metrics"], integer["result"]
        acc = i["accuracy"]
        lines.append(
            f"| SpQuant-SNN, integer interpreter (`.spq` file, {i['file_bytes']:,} bytes) | same | same | (packed in file) | | | | "
            f"{_interpreter_reduction(i)} | {100 * acc:.2f} % | {100 * (base_acc - acc):+.2f} pt | {i['interpreter_seconds'] / 60:.1f} min (inference) |"
        )
    return lines


def ablation_table(base: dict, runs: list[dict]) -> list[str]:
    lines = [
        "| ablation (vs SpQuant-SNN on emulated events) | accuracy | Δ accuracy | FLOPs reduction | skipped membrane updates | total MB (packed) | wall time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    b = base["metrics"]["test_accuracy"]
    for r in [base] + runs:
        m = r["metrics"]
        label = "SpQuant-SNN (reference row)" if r is base else r["label"]
        lines.append(
            f"| {label} | {100 * m['test_accuracy']:.2f} % | {100 * (m['test_accuracy'] - b):+.2f} pt | {m.get('flops_reduction', float('nan')):.2f}x | "
            f"{100 * m.get('skipped_update_fraction', 0):.1f} % | {m['total_mb_packed']:.4f} | {r['experiment']['wall_seconds'] / 60:.1f} min |"
        )
    return lines


def layer_stats(run: dict, n: int = 500) -> dict:
    from spquant.prune import collect_prune_stats
    from spquant.train.data import load_split

    loaded = load_run(run["dir"])
    model, config = loaded.model, loaded.config
    test = load_split(config, "test")
    batches = [test.batch(torch.arange(s, min(s + 100, n)), config.model.T)[0] for s in range(0, n, 100)]
    return collect_prune_stats(model, batches)


def plots(tables: dict, stats: dict, out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install spquant[plot])")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in tables.items():
        if name == "ablations" or not runs:
            continue
        mem = [r["metrics"]["total_mb_packed"] for r in runs]
        acc = [100 * r["metrics"]["test_accuracy"] for r in runs]
        axes[0].plot(mem, acc, "o-", label=name)
        for r, x, y in zip(runs, mem, acc):
            axes[0].annotate(
                r["metrics"]["mode"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    axes[0].set_xscale("log")
    axes[0].set_xlabel("total memory, packed (MB = 10^6 bytes)")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("accuracy vs memory")
    axes[0].legend()
    pts = [r for runs in tables.values() for r in runs if "flops_reduction" in r["metrics"]]
    for r in pts:
        axes[1].plot(r["metrics"]["flops_reduction"], 100 * r["metrics"]["test_accuracy"], "o")
        axes[1].annotate(
            r["row"],
            (r["metrics"]["flops_reduction"], 100 * r["metrics"]["test_accuracy"]),
            textcoords="offset points",
            xytext=(4, 2),
            fontsize=7,
        )
    axes[1].set_xlabel("measured FLOPs reduction (dense / (kept + gate overhead))")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].set_title("accuracy vs FLOPs reduction (pruned rows)")
    fig.tight_layout()
    p = out_dir / "results_tradeoffs.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(p)
    if stats:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, s in stats.items():
            axes[0].plot(
                range(len(s["active_channel_fraction"])), s["active_channel_fraction"], "o-", label=name
            )
        axes[0].set_xlabel("time step t")
        axes[0].set_ylabel("active-channel fraction")
        axes[0].set_ylim(0, 1.05)
        axes[0].set_title("per-layer active channels (events, SpQuant-SNN)")
        axes[0].legend(fontsize=7)
        names = list(stats)
        levels = sorted({int(k) for s in stats.values() for k in s["level_counts"]})
        width = 0.8 / max(1, len(levels))
        for j, level in enumerate(levels):
            frac = []
            for s in stats.values():
                total = sum(s["level_counts"].values()) or 1
                frac.append(s["level_counts"].get(level, s["level_counts"].get(str(level), 0)) / total)
            axes[1].bar([i + j * width for i in range(len(names))], frac, width, label=f"m = {level}")
        axes[1].set_xticks(
            [i + 0.4 - width / 2 for i in range(len(names))],
            [n.replace("features.", "L") for n in names],
            fontsize=7,
        )
        axes[1].set_ylabel("fraction of stored membrane values")
        axes[1].set_title("membrane level histogram per layer")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "results_layers.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    return [str(f.relative_to(ROOT)) for f in files]


def write_results(tables: dict, integer: dict, stats: dict, args, started: float) -> Path:
    lines = [
        "# Results on real data",
        "",
        "Generated by `python experiments/results.py"
        + (f" --budget {args.budget}" if args.budget != "cpu" else "")
        + (f" --width {args.width}" if args.width != 0.125 else "")
        + "` from the run folders in `runs/results/` — every number below is read from a run; none is typed by hand.",
        "",
        "## Setup",
        "",
        f"* Model: VGG-9 (8 conv + FC, docs/method.md#models) at width {args.width} "
        f"({', '.join(str(max(1, round(c * args.width))) for c in (64, 128, 256, 256, 512, 512, 512, 512))} channels), 32x32 input.",
        f"* Budget `{args.budget}`: {BUDGETS[args.budget][0]:,} training images (a seeded random subset of the 60,000), "
        f"{BUDGETS[args.budget][1]} epoch(s), batch 64, Adam lr 3e-3 cosine, seed 0; tested on all 10,000 MNIST test images.",
        f"* Static: full MNIST, direct encoding (image repeated T = {BUDGETS[args.budget][2]} times), padded 28 -> 32, TET lam 0.05.",
        f"* Events: the same MNIST turned into events by `spquant.data.emulate` (three saccades over 300 ms on a 34x34 sensor, "
        f"N-MNIST-like, ~4,400 events per digit), T = {BUDGETS[args.budget][3]} frames of 2-channel ON/OFF counts, centre-cropped to 32x32 "
        "(integer counts, so the integer interpreter gets exactly the training input), TET lam 0.05 (the authors' 0.9 left the FP32 SNN at "
        "71.7 % after one epoch in a first attempt: the MSE term dominates short runs).",
        "* Quant-SNN: ternary hidden weights, 8-bit first conv and classifier, ternary integer membrane {-1, 0, 1}. "
        "SpQuant-SNN adds the learned channel gate (mass 0.85, ternary 1x1 predictors), the membrane prior (channel + spatial) and a learnable threshold per layer.",
        "* Memory: MB = 10^6 bytes, one sample at one time step (docs/method.md#memory). **packed** = the `.spq` storage (ternary weights and membrane "
        "5 values per byte = 1.6 bits); **paper's 2-bit** = the paper's convention (ternary at 2 bits). BN parameters, biases and the "
        "gate predictors (ternary in the SpQuant rows, 8-bit in one ablation row) are counted; the reduction is against the FP32 SNN of the same architecture.",
        "* FLOPs reduction: measured on test data, dense MACs / (kept MACs + gate-predictor MACs) (docs/method.md#accountings); dense rows are 1.00x by definition.",
        f"* Machine: 2 CPU cores, torch {torch.__version__}; each run used "
        f"{'/'.join(str(t) for t in sorted({r['experiment'].get('threads', '?') for runs in tables.values() for r in runs}))} torch thread(s), "
        "two runs in parallel; wall times include evaluation and cost measurement.",
        "",
    ]
    fp32_rows = {}
    for name, title in (
        ("static", "MNIST, static images (direct encoding)"),
        ("events", "MNIST as emulated event-camera data"),
    ):
        runs = tables.get(name) or []
        if not runs:
            continue
        lines += [f"## {title}", ""]
        lines += main_table(runs, integer.get(name))
        fp32_rows[name] = runs[0]
        lines.append("")
        if integer.get(name):
            i = integer[name]["result"]
            lines.append(
                f"Integer interpreter: {100 * i['accuracy']:.2f} % vs fake-quant {100 * i['fake_quant_accuracy']:.2f} % on {i['samples']:,} test samples "
                f"(predictions agree on {100 * i['prediction_agreement_with_fake_quant']:.2f} %); fast path == numpy reference path on the first "
                f"{i['reference_checked_samples']} samples: {i['fast_equals_reference']}; reference path executed "
                f"{i['reference_ops_per_sample'].get('kept_macs', float('nan')):,.0f} kept MACs per sample "
                f"(dense {i['reference_ops_per_sample'].get('dense_macs', float('nan')):,.0f})."
            )
            from spquant.deploy import file_report

            rep = file_report(Path(integer[name]["run"]["dir"]) / "model.spq")
            lines.append("")
            lines.append(
                f"`.spq` file: {rep['file_bytes']:,} bytes = packed weight codes {rep['weight_blob_bytes']:,} B (memory accounting: "
                f"{rep['accounting_packed_bytes']:,.0f} B packed) + fixed-point parameters {rep['fixed_point_param_bytes']:,} B "
                f"(per-channel multipliers, biases, thresholds and the gate rule's 64-bit matrices and exp tables) + manifest "
                f"{rep['manifest_bytes']:,} B."
            )
            lines.append("")
    if tables.get("ablations") and tables.get("events"):
        base = tables["events"][-1]
        lines += ["## Ablations (emulated events)", ""]
        lines += ablation_table(base, tables["ablations"])
        lines.append("")
    lines += targets_section(tables, integer)
    if stats:
        lines += [
            "## Per-layer statistics (events, SpQuant-SNN, 500 test samples)",
            "",
            "| layer | active channels (mean) | spatially skipped | kept neurons | spike rate | membrane levels (fraction) |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, s in stats.items():
            total = sum(s["level_counts"].values()) or 1
            levels = ", ".join(f"{k}: {v / total:.2f}" for k, v in s["level_counts"].items())
            lines.append(
                f"| {name} | {s['mean_active_channel_fraction']:.3f} | {s['mean_spatial_skip_fraction']:.3f} | {s['mean_kept_fraction']:.3f} | {s['spike_rate']:.3f} | {levels} |"
            )
        lines.append("")
    files = plots(tables, stats, ROOT / "docs" / "img")
    if files:
        lines += ["## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in files] + [""]
    lines += ["## Commands", "", "Each row is one run; to reproduce a single row:", "", "```"]
    for runs in tables.values():
        for r in runs:
            lines.append(r["experiment"]["command"])
    total = sum(r["experiment"]["wall_seconds"] for runs in tables.values() for r in runs)
    lines += [
        "```",
        "",
        f"Training wall time summed over the rows: {total / 60:.1f} min (two rows ran in parallel on the 2 cores); "
        f"this RESULTS.md pass (integer interpreter rows, statistics, plots): {(time.time() - started) / 60:.1f} min.",
        "",
    ]
    path = ROOT / "RESULTS.md"
    # sections written by other experiments from their own runs (quant_results, quant_defaults,
    # detection, sparsity: each between its own markers) are kept as they are
    old = path.read_text() if path.is_file() else ""
    for m in re.finditer(r"<!-- (\w+):(?:start|begin) -->.*?<!-- \1:end -->", old, flags=re.S):
        lines += [m.group(0), ""]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def targets_section(tables: dict, integer: dict) -> list[str]:
    runs = tables.get("events") or []
    if len(runs) < 3:
        return []
    fp32, sp = runs[0]["metrics"], runs[-1]["metrics"]
    mem = fp32["total_mb_fp32"] / sp["total_mb_packed"]
    flops = sp.get("flops_reduction", 1.0)
    drop = 100 * (fp32["test_accuracy"] - sp["test_accuracy"])
    ok = lambda c: "met" if c else "**missed**"  # noqa: E731
    return [
        "## Targets (issue: memory >= 16x packed, FLOPs >= 5x, drop <= 1.0 pt on the event data)",
        "",
        "| target | measured (SpQuant-SNN vs FP32 SNN, events) | status |",
        "| --- | ---: | --- |",
        f"| memory reduction >= 16x (packed) | {mem:.2f}x | {ok(mem >= 16)} |",
        f"| FLOPs reduction >= 5x | {flops:.2f}x | {ok(flops >= 5)} |",
        f"| accuracy drop <= 1.0 pt | {drop:+.2f} pt | {ok(drop <= 1.0)} |",
        "",
        *gap_notes(tables, mem, flops),
    ]


def gap_notes(tables: dict, mem: float, flops: float) -> list[str]:
    """Why a missed target is missed, with the measured numbers that show it."""
    notes = []
    sp = tables["events"][-1]["metrics"]
    quant = tables["events"][1]["metrics"]
    if mem < 16:
        notes.append(
            f"* Memory: {mem:.2f}x is {100 * (16 / mem - 1):.1f} % short of 16x. Ternary codes alone would give 20x (32 / 1.6 bits); "
            f"what keeps it lower is counted at more bits: the 8-bit first conv and classifier, 32-bit BN parameters, biases and "
            f"thresholds, and the gate predictors (Quant-SNN without predictors: {quant['memory_reduction_packed']:.2f}x). "
            "Counting BN as the deployed 16-bit fixed-point multipliers, or ternary first/last layers, would close it."
        )
    abl = {r["row"]: r["metrics"] for r in tables.get("ablations", [])}
    if flops < 5:
        mass = abl.get("abl-mass-0.5")
        no_gate = abl.get("abl-no-gate")
        notes.append(
            f"* FLOPs: {flops:.2f}x is {5 / flops:.1f}x short of 5x. After one epoch the learned gates keep almost every channel "
            "(per-layer active-channel fraction below): with BN every channel carries a similar max-|current|, so the 85 % mass target "
            "marks most channels as needed; the reduction comes from the membrane prior's spatial skips"
            + (f" (learned gate off: {no_gate['flops_reduction']:.2f}x)" if no_gate else "")
            + "."
            + (
                f" A 0.5 mass target prunes harder ({mass['flops_reduction']:.2f}x) but costs "
                f"{100 * (sp['test_accuracy'] - mass['test_accuracy']):.2f} pt in this budget."
                if mass
                else ""
            )
            + " The paper trains 200-300 epochs with the gates on; longer training, an explicit sparsity target for the gates, "
            "and counting SOPs (the effective reduction from spike sparsity, "
            f"{sp.get('effective_reduction', float('nan')):.2f}x here) are the levers."
        )
    return notes + ([""] if notes else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="all", choices=["static", "events", "ablations", "all"])
    p.add_argument("--budget", default="cpu", choices=sorted(BUDGETS))
    p.add_argument("--width", type=float, default=0.125, help="VGG-9 width multiplier (1.0 = paper widths)")
    p.add_argument("--out", default=str(ROOT / "runs" / "results"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra KEY=VALUE override for every row (e.g. run.device=cuda)",
    )
    p.add_argument("--only", default=None, help="comma-separated row ids to (re)run, e.g. events-spquant")
    p.add_argument("--no-write", action="store_true", help="train only, do not write RESULTS.md")
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds: train the static and event rows once per seed and write their "
        "mean +- sd section only",
    )
    p.add_argument("--results", default=str(ROOT / "RESULTS.md"), help="file the --seeds section goes to")
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="with --seeds: train nothing, write the section from the runs already finished",
    )
    args = p.parse_args(argv)
    started = time.time()
    out_root = Path(args.out)
    if args.seeds:
        return run_seeds(args, [int(s) for s in args.seeds.split(",") if s.strip()], out_root)
    wanted = ["static", "events", "ablations"] if args.rows == "all" else [args.rows]
    if "ablations" in wanted and "events" not in wanted:
        wanted.insert(0, "events")
    only = set(args.only.split(",")) if args.only else None
    tables = {}
    for name in wanted:
        tables[name] = []
        for row in MAIN_ROWS[name]:
            if only and row[0] not in only and not (out_root / row[0] / "run.json").is_file():
                continue
            tables[name].append(run_row(row, out_root, args.budget, args.width, args.set))
    if args.no_write:
        return 0
    integer = {}
    for name in ("static", "events"):
        runs = tables.get(name) or []
        sp = next((r for r in runs if r["metrics"]["mode"] == "spquant"), None)
        if sp is not None:
            cache = Path(sp["dir"]) / "integer.json"
            if not cache.is_file():
                print(f"== integer interpreter on {sp['row']}", flush=True)
                cache.write_text(json.dumps(integer_row(sp), indent=1))
            integer[name] = {"run": sp, "result": json.loads(cache.read_text())}
    stats = {}
    ev = [r for r in tables.get("events") or [] if r["metrics"]["mode"] == "spquant"]
    if ev:
        stats = layer_stats(ev[0])
    path = write_results(tables, integer, stats, args, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
