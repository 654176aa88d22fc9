"""Short ablations of the budgeted gate on emulated-event MNIST (``mnist-dvs``, the bundled 6,000
training / 1,000 test digits, one epoch = 94 steps; VGG-9 at width 1/8, T = 4, ternary predictors):
how fast the predictors learn, how the target is ranked, the schedule, distillation and the priors,
each at ``keep = 0.5`` beside the Quant-SNN and FP32 SNN of the same budget.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/gate_ablations.py --out runs/gate_ablations
    python experiments/gate_ablations.py --out runs/gate_ablations --table

Each row is the ``spquant train`` command printed before it runs (a normal run folder, skipped when
finished). One seed and 94 steps: differences below ~2 pt are within what a seed changes here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from sparsity import COMMON as SWEEP_COMMON  # noqa: E402

from spquant.train import load_config, train  # noqa: E402

# the keep sweep's network and optimiser (experiments/sparsity.py) at its `embedded` budget
COMMON = SWEEP_COMMON + [
    "data.source=embedded",
    "data.train_subset=6000",
    "train.epochs=1",
    "quant.prune.predictor_bits=2",
]
K = ["quant.prune.keep=0.5"]
S = K + ["quant.prune.target_scope=sample"]
ROWS = [
    # name, label, overrides on top of mnist-dvs:spquant
    ("e-fp32", "FP32 SNN", ["quant.mode=fp32"]),
    ("e-quant", "Quant-SNN", ["quant.mode=quant"]),
    ("e-lr1", "per-sample target, predictor lr x1", S + ["quant.prune.predictor_lr_scale=1.0"]),
    ("e-lr3", "per-sample target, predictor lr x3", S + ["quant.prune.predictor_lr_scale=3.0"]),
    ("lr10-k05", "per-sample target, predictor lr x10", S),
    ("e-slowramp", "  ... ramp 0.6 (target reached at 80 %)", S + ["quant.prune.ramp=0.6"]),
    ("e-fastramp", "  ... warm-up 0.1, ramp 0.2", S + ["quant.prune.warmup=0.1", "quant.prune.ramp=0.2"]),
    ("e-nospatial", "  ... spatial prior off", S + ["quant.prune.spatial_prior=false"]),
    (
        "e-nopriors",
        "  ... both priors off",
        S + ["quant.prune.spatial_prior=false", "quant.prune.channel_prior=false"],
    ),
    (
        "e-distill",
        "  ... distilled from the FP32 SNN (w 0.5, tau 2)",
        S + ["train.distill_teacher={out}/e-fp32", "train.distill_temperature=2.0"],
    ),
    ("e-batch", "batch target, predictor lr x10", K + ["quant.prune.target_scope=batch"]),
    (
        "e-batch-lr3",
        "batch target, predictor lr x3",
        K + ["quant.prune.target_scope=batch", "quant.prune.predictor_lr_scale=3.0"],
    ),
    (
        "e-batch-slow",
        "batch target, ramp 0.6",
        K + ["quant.prune.target_scope=batch", "quant.prune.ramp=0.6"],
    ),
]


def table(out: Path) -> str:
    lines = [
        "| row | accuracy | kept fraction | dense MAC red. | effective op red. |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label, _ in ROWS:
        f = out / name / "run.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())["metrics"]
        sparse = m.get("mode") == "spquant"
        red = [
            f"{m[k]:.2f}x" if sparse else "1.00x (dense)"
            for k in ("dense_mac_reduction", "effective_op_reduction")
        ]
        kept = f"{m['kept_fraction']:.3f}" if sparse else ""
        lines.append(f"| {label} | {100 * m['test_accuracy']:.2f} % | {kept} | {' | '.join(red)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gate_ablations")
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--table", action="store_true", help="print the table of finished rows and stop")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.table:
        only = {s for s in args.only.split(",") if s}
        for name, label, extra in ROWS:
            run_dir = out / name
            if (only and name not in only) or (run_dir / "run.json").is_file():
                continue
            sets = COMMON + [s.format(out=out) for s in extra]
            print(
                f"== {label}: spquant train --config mnist-dvs:spquant "
                + " ".join(f"--set '{s}'" for s in sets)
                + f" --out {run_dir}",
                flush=True,
            )
            t0 = time.perf_counter()
            res = train(load_config("mnist-dvs:spquant", sets), run_dir, progress=False, overwrite=True)
            print(
                f"{100 * res.metrics['test_accuracy']:.2f} % in {time.perf_counter() - t0:.0f} s", flush=True
            )
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
