"""Quantizing a trained SNN, with statistics over seeds: FP32 SNN -> Quant-SNN / SpQuant-SNN /
binary-weight SNN started from it (``train.init_from``), with distillation and learned scales.

Two data sets, both built here from full MNIST (IDX files under ``--mnist``):

* ``proxy`` (the harder proxy): a tenth of the MNIST training images (the first 6,000) and all
  10,000 test images, each randomly distorted once (fixed seeds): random affine (rotation +-25 deg,
  scale 0.75-1.15, shear +-15 deg, translation +-3 px) then additive Gaussian noise (sigma 0.25),
  clamped to [0, 1] and stored as uint8; direct encoding, T = 2, 28x28.
* ``mnist-dvs``: MNIST as emulated events (the project's emulator, N-MNIST-like saccades, 34x34),
  the first 3,000 training and 2,000 test images, T = 4 frames of 2-channel ON/OFF counts,
  centre-cropped to 32x32 (integer counts).

Network: the reduced VGG plan 16c3-AP2-32c3-AP2-FC (CPU scale). For every data set and seed:
``fp32`` (from scratch), then, each started from that FP32 run: ``quant`` and ``spquant`` (the new
defaults: init-from + distillation from the FP32 run + learned per-channel steps) and ``binary``
(1-bit hidden and classifier weights with learned per-channel scales, 8-bit first conv). Lever
ablations on the proxy (seed 0): each lever off in turn, and per-channel thresholds on.

Every run is a normal spquant run folder under ``--out`` (skipped when already finished), so
``experiments/quant_results.py`` regenerates the tables from the folders. Budget and machine load
are recorded in ``--out/budget.json``.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/quant_stats.py --out runs/quant
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spquant.train.config import load_config  # noqa: E402
from spquant.train.data import TensorData  # noqa: E402
from spquant.train.loop import train  # noqa: E402

PLAN = '[16, "A", 32, "A"]'
SEEDS = (0, 1, 2)
NEW_DEFAULTS = [
    'quant.weight_scale="lsq-channel"',
    "train.distill_weight=0.5",
    "train.distill_temperature=2.0",
]
FINETUNE = ["train.lr=5e-4", "train.epochs=1"]
DATASETS = {
    "proxy": dict(T=2, in_channels=1, input=(28, 28), lam=0.05, fp32_epochs=2),
    "mnist-dvs": dict(T=4, in_channels=2, input=(32, 32), lam=0.05, fp32_epochs=2),
}
# name -> (mode, extra overrides) of the runs started from the FP32 run
STUDENTS = {
    "quant": ("quant", NEW_DEFAULTS),
    "spquant": ("spquant", NEW_DEFAULTS),
    "binary": ("quant", NEW_DEFAULTS + ["quant.weight_bits=1", "quant.last_bits=1"]),
}
# lever ablations (proxy, seed 0): the quant row with one lever changed
LEVERS = {  # in order of importance: a run cut short by the budget loses the last ones
    "fp32-continued": ("fp32", NEW_DEFAULTS, True),  # control: the FP32 run fine-tuned the same way
    "quant-no-distill": ("quant", ['quant.weight_scale="lsq-channel"', "train.distill_weight=0.0"], True),
    "quant-stat-scale": (
        "quant",
        ['quant.weight_scale="stat"', "train.distill_weight=0.5", "train.distill_temperature=2.0"],
        True,
    ),
    "quant-vth-channel": ("quant", NEW_DEFAULTS + ['quant.learn_threshold="channel"'], True),
    "quant-ternary-first-last": ("quant", NEW_DEFAULTS + ["quant.first_bits=2", "quant.last_bits=2"], True),
    "quant-scratch": ("quant", ['quant.weight_scale="stat"', "train.distill_weight=0.0"], False),
    "quant-lsq-layer": (
        "quant",
        ['quant.weight_scale="lsq-layer"', "train.distill_weight=0.5", "train.distill_temperature=2.0"],
        True,
    ),
    "quant-4bit-first-last": ("quant", NEW_DEFAULTS + ["quant.first_bits=4", "quant.last_bits=4"], True),
    "spquant-keep-0.5": (
        "spquant",
        NEW_DEFAULTS + ["quant.prune.keep=0.5"],
        True,
    ),  # gates opened, then to the budget
}


# -- data ------------------------------------------------------------------------------------------
def _distort(x_u8: np.ndarray, seed: int) -> torch.Tensor:
    """Random affine + Gaussian noise, one fixed draw per image: uint8 [N, 1, 28, 28]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(x_u8)).float().div(255).unsqueeze(1)
    n = x.shape[0]
    rot = (torch.rand(n, generator=g) * 2 - 1) * math.radians(25)
    shear = (torch.rand(n, generator=g) * 2 - 1) * math.radians(15)
    scale = 0.75 + torch.rand(n, generator=g) * 0.40
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (3 / 14)  # +-3 px in [-1, 1] grid units
    cos, sin = torch.cos(rot), torch.sin(rot)
    a = torch.stack(
        [
            torch.stack([cos, -sin + torch.tan(shear) * cos], 1),
            torch.stack([sin, cos + torch.tan(shear) * sin], 1),
        ],
        1,
    )
    theta = torch.cat([a / scale[:, None, None], shift[:, :, None]], 2)
    out = []
    for s in range(0, n, 2000):
        grid = F.affine_grid(theta[s : s + 2000], list(x[s : s + 2000].shape), align_corners=False)
        out.append(F.grid_sample(x[s : s + 2000], grid, align_corners=False, padding_mode="zeros"))
    y = torch.cat(out) + 0.25 * torch.randn(x.shape, generator=g)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)


def proxy_data(mnist: Path) -> tuple[TensorData, TensorData]:
    from spquant.data.idx import load_idx_split

    xtr, ytr = load_idx_split(mnist, "train")
    xte, yte = load_idx_split(mnist, "test")
    tr = TensorData(
        _distort(xtr[:6000], 1),
        torch.from_numpy(np.asarray(ytr[:6000], dtype=np.int64)),
        static=True,
        scale=1 / 255,
    )
    te = TensorData(
        _distort(xte, 2), torch.from_numpy(np.asarray(yte, dtype=np.int64)), static=True, scale=1 / 255
    )
    return tr, te


def dvs_data(mnist: Path, cache: Path) -> tuple[TensorData, TensorData]:
    from spquant.data.loader import mnist_frames

    out = []
    for split, n in (("train", 3000), ("test", 2000)):
        frames, labels = mnist_frames(
            split,
            T=4,
            source=str(mnist),
            encoding="events",
            mode="count2",
            limit=n,
            cache_dir=str(cache),
            workers=1,
        )
        frames = frames[..., 1:33, 1:33].contiguous()  # centre crop 34 -> 32 (integer counts kept)
        out.append(TensorData(frames, labels.to(torch.int64), static=False))
    return out[0], out[1]


# -- runs ------------------------------------------------------------------------------------------
def base_overrides(name: str) -> list[str]:
    d = DATASETS[name]
    return [
        f"model.plan={PLAN}",
        f"model.T={d['T']}",
        f"model.in_channels={d['in_channels']}",
        f"model.input=[{d['input'][0]}, {d['input'][1]}]",
        f"train.lam={d['lam']}",
        "train.batch_size=64",
        "train.lr=2e-3",
        "train.eval_batch_size=500",
        "run.progress=false",
        "run.tensorboard=false",
        "run.threads=1",
        f'description="{name}: see experiments/quant_stats.py"',
    ]


def budget_and_log(runs: Path) -> tuple[dict, list[str]]:
    """The ``budget.json`` and the lines of ``log.txt`` a run folder of these experiments holds."""
    budget = json.loads((runs / "budget.json").read_text()) if (runs / "budget.json").is_file() else {}
    log = (runs / "log.txt").read_text().splitlines() if (runs / "log.txt").is_file() else []
    return budget, log


def run_logger(path: Path):
    """A function that prints a time-stamped line and appends it to ``path``."""
    logf = open(path, "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    return log


def run_one(out: Path, recipe: str, overrides: list[str], data, log) -> dict:
    if (out / "run.json").is_file():
        return json.loads((out / "run.json").read_text())["metrics"]
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = load_config(recipe, overrides)
    t0 = time.perf_counter()
    res = train(cfg, out, data=data, progress=False)
    m = res.metrics
    log(f"{out}: {100 * m['test_accuracy']:.2f} % in {time.perf_counter() - t0:.0f} s")
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quant")
    ap.add_argument("--mnist", default=str(ROOT.parent.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--datasets", default="proxy,mnist-dvs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--levers", action="store_true", help="also run the lever ablations (proxy, seed 0)")
    ap.add_argument("--only-levers", action="store_true")
    ap.add_argument("--students", default=",".join(STUDENTS), help="which of the student rows to run")
    ap.add_argument(
        "--finetune-epochs", type=int, default=1, help="epochs of every run started from the FP32 run"
    )
    ap.add_argument(
        "--controls",
        action="store_true",
        help="also fine-tune each seed's FP32 run the same way (fp32-continued): what the extra epochs alone give",
    )
    ap.add_argument(
        "--smoke", action="store_true", help="2 steps per run, 200 test images (checks the script)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = Path(args.mnist)
    log = run_logger(out / "log.txt")

    budget = {
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "plan": PLAN,
        "datasets": DATASETS,
        "seeds": args.seeds,
        "new_defaults": NEW_DEFAULTS,
        "finetune": FINETUNE + [f"train.epochs={args.finetune_epochs}"],
        "students": {k: v[1] for k, v in STUDENTS.items()},
        "levers": {k: v[1] for k, v in LEVERS.items()},
    }
    (out / "budget.json").write_text(json.dumps(budget, indent=1, default=list))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        t0 = time.perf_counter()
        data = proxy_data(mnist) if name == "proxy" else dvs_data(mnist, out / "event_cache")
        log(
            f"{name}: data ready ({len(data[0])} train / {len(data[1])} test) in {time.perf_counter() - t0:.0f} s"
        )
        base = base_overrides(name)
        if args.smoke:
            base.append("train.max_steps=2")
            data = (
                data[0],
                TensorData(
                    data[1].inputs[:200], data[1].labels[:200], static=data[1].static, scale=data[1].scale
                ),
            )
        recipe = "mnist" if name == "proxy" else "mnist-dvs"
        for seed in seeds:
            teacher = out / name / f"seed{seed}" / "fp32"
            run_one(
                teacher,
                f"{recipe}:fp32",
                base + [f"train.seed={seed}", f"train.epochs={DATASETS[name]['fp32_epochs']}"],
                data,
                log,
            )
            student_base = (
                base
                + [f"train.seed={seed}", f'train.init_from="{teacher}"', f'train.distill_teacher="{teacher}"']
                + FINETUNE
                + [f"train.epochs={args.finetune_epochs}"]
            )
            wanted = [w.strip() for w in args.students.split(",") if w.strip()]
            todo = {} if args.only_levers else {k: v for k, v in STUDENTS.items() if k in wanted}
            if (args.levers or args.only_levers) and name == "proxy" and seed == 0:
                todo.update({k: (v[0], v[1]) for k, v in LEVERS.items()})
            if args.controls:
                todo["fp32-continued"] = LEVERS["fp32-continued"][:2]
            for student, (mode, extra) in todo.items():
                over = list(student_base)
                if student == "quant-scratch":  # the old path: from scratch, as long as FP32 + fine-tune
                    over = base + [f"train.seed={seed}", f"train.epochs={DATASETS[name]['fp32_epochs'] + 1}"]
                run_one(out / name / f"seed{seed}" / student, f"{recipe}:{mode}", over + extra, data, log)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
