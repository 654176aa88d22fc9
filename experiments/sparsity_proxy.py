"""What pruning costs on harder data, part by part: the budgeted gate and the membrane prior ablated
on the harder proxy of experiments/quant_stats.py (a tenth of MNIST, each image randomly distorted
by an affine warp and Gaussian noise), zero-padded to 32x32, with the VGG-9 of RESULTS.md.

Rows (each a normal run folder under ``--out``, skipped when finished): the FP32 SNN and the
Quant-SNN of the same budget, the method's mass-0.85 gate (``keep = 1``), and the budgeted gate at
``--keep`` with its target ranked per sample (a dynamic gate) or over the batch (``target_scope =
batch``), the latter with the spatial prior, both priors, or the learned gate switched off.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/sparsity_proxy.py --out runs/sparsity_proxy
    python experiments/sparsity_proxy.py --out runs/sparsity_proxy --table   # print the table only

The table is printed in Markdown (accuracy, drop vs the Quant-SNN, kept fraction and the three
operation accountings); docs/pruning_and_cost.md quotes it.
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

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from spquant.train import load_config, train  # noqa: E402
from spquant.train.data import TensorData  # noqa: E402

COMMON = [
    "model.plan=none",
    "model.width=0.125",
    "model.input=[32, 32]",
    "model.in_channels=1",
    "model.T=2",
    "train.lam=0.05",
    "train.lr=3e-3",
    "train.batch_size=64",
    "train.eval_batch_size=500",
    "train.seed=0",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
    'description="harder proxy: see experiments/sparsity_proxy.py"',
]
SP = ["quant.prune.predictor_bits=2"]


def rows(keep: float) -> list[tuple[str, str, str, list[str]]]:
    k = [f"quant.prune.keep={keep}"]
    batch = k + ["quant.prune.target_scope=batch"]
    return [
        ("fp32", "FP32 SNN", "fp32", []),
        ("quant", "Quant-SNN", "quant", []),
        ("mass", "SpQuant, mass-0.85 gate (keep 1)", "spquant", SP),
        (
            "sample",
            f"SpQuant keep {keep:g}, per-sample target",
            "spquant",
            SP + k + ["quant.prune.target_scope=sample"],
        ),
        ("batch", f"SpQuant keep {keep:g}, batch target", "spquant", SP + batch),
        (
            "batch-no-spatial",
            "  ... spatial prior off",
            "spquant",
            SP + batch + ["quant.prune.spatial_prior=false"],
        ),
        (
            "batch-no-priors",
            "  ... both priors off",
            "spquant",
            SP + batch + ["quant.prune.spatial_prior=false", "quant.prune.channel_prior=false"],
        ),
        # capacity control: a dense Quant-SNN with about half the MACs (width 1/8 divided by sqrt 2)
        ("quant-narrow", "Quant-SNN at width 0.088 (dense, ~0.5x the MACs)", "quant", ["model.width=0.0884"]),
        (
            "priors-only",
            "SpQuant, priors only (learned gate off)",
            "spquant",
            SP + ["quant.prune.learned_gate=false"],
        ),
    ]


def padded(d: TensorData) -> TensorData:
    x = F.pad(d.inputs, (2, 2, 2, 2))  # 28 -> 32, zeros: the same integer codes
    return TensorData(x, d.labels, static=True, scale=d.scale)


def table(out: Path, keep: float) -> str:
    lines = [
        "| row | accuracy | vs Quant-SNN | kept fraction | dense MAC red. | effective op red. | authors' conv. |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    metrics = {}
    for name, label, _, _ in rows(keep):
        f = out / name / "run.json"
        if f.is_file():
            metrics[name] = (label, json.loads(f.read_text())["metrics"])
    q = metrics.get("quant", (None, {}))[1].get("test_accuracy")
    for label, m in metrics.values():
        acc = m["test_accuracy"]
        d = f"{100 * (acc - q):+.2f} pt" if q is not None else ""
        sparse = m.get("mode") == "spquant"
        red = [
            f"{m[key]:.2f}x" if sparse and isinstance(m.get(key), (int, float)) else "1.00x (dense)"
            for key in ("dense_mac_reduction", "effective_op_reduction", "paper_convention_reduction")
        ]
        kf = m.get("kept_fraction")
        kept = f"{kf:.3f}" if sparse and isinstance(kf, (int, float)) else ""
        lines.append(f"| {label} | {100 * acc:.2f} % | {d} | {kept} | {' | '.join(red)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/sparsity_proxy")
    ap.add_argument("--mnist", default=str(ROOT.parent.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated row names")
    ap.add_argument("--table", action="store_true", help="print the table of finished rows and stop")
    ap.add_argument("--smoke", action="store_true", help="2 steps per run, 200 test images")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table(out, args.keep))
        return 0
    from quant_stats import proxy_data

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_data, test_data = (padded(d) for d in proxy_data(Path(args.mnist)))
    if args.smoke:
        test_data = TensorData(
            test_data.inputs[:200], test_data.labels[:200], static=True, scale=test_data.scale
        )
    print(f"proxy ready: {len(train_data)} train / {len(test_data)} test in {time.perf_counter() - t0:.0f} s")
    only = {s for s in args.only.split(",") if s}
    for name, label, variant, extra in rows(args.keep):
        if only and name not in only:
            continue
        run_dir = out / name
        if (run_dir / "run.json").is_file():
            continue
        sets = (
            COMMON + [f"train.epochs={args.epochs}"] + extra + (["train.max_steps=2"] if args.smoke else [])
        )
        t1 = time.perf_counter()
        res = train(
            load_config(f"mnist:{variant}", sets),
            run_dir,
            data=(train_data, test_data),
            progress=False,
            overwrite=True,
        )
        print(
            f"{label}: {100 * res.metrics['test_accuracy']:.2f} % in {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
    print(table(out, args.keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
