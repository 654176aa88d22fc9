"""Binary weights on the RESULTS.md network: a binary-weight and a ternary Quant-SNN started from
the same trained FP32 SNN (VGG-9 width 1/8, MNIST as emulated events, 32x32, T = 4), their test
accuracy, their memory as deployed, and what limits the ratio.

    python experiments/sparsity.py --budget cpu --epochs 2 --keeps 1.0   # the FP32 parent (fp32 row)
    OMP_NUM_THREADS=1 python experiments/binary_memory.py --parent runs/sparsity/cpu-2ep/fp32 \
        --out runs/binary --write RESULTS.md

Each student is one ``spquant train`` run under ``--out`` (reused when finished): the parent's
budget (``experiments/sparsity.py`` COMMON, 15,000 training images) and the new defaults of
``experiments/quant_stats.py`` (``train.init_from`` and distillation from the parent, learned
per-channel steps, one fine-tune epoch at lr 5e-4). ``binary``: 1-bit hidden and classifier
weights, 8-bit first conv; ``ternary``: the Quant-SNN bits (ternary hidden, 8-bit first conv and
classifier). Memory as deployed is what ``spquant cost --checkpoint RUN --json`` reports under
``deployed``; the run is exported (``spquant export``) and, with ``--integer``, the integer
interpreter is run on the whole test split. The section between the ``binary_memory`` markers of
``--write`` is replaced; nothing else in the file changes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from quant_stats import FINETUNE, NEW_DEFAULTS  # noqa: E402
from sections import write_marked  # noqa: E402
from sparsity import COMMON  # noqa: E402

START, END = "<!-- binary_memory:start -->", "<!-- binary_memory:end -->"
STUDENTS = {
    "binary": (
        "1-bit hidden and classifier weights, 8-bit first conv",
        ["quant.weight_bits=1", "quant.last_bits=1"],
    ),
    "ternary": ("ternary hidden weights, 8-bit first conv and classifier (Quant-SNN)", []),
}


def overrides(parent: str, extra: list[str], root: str | None) -> list[str]:
    """The student's overrides: the parent's budget, then the new defaults started from it."""
    return (
        COMMON
        + ["data.source=full", "data.train_subset=15000"]
        + ([f"data.root={root}"] if root else [])
        + ["run.progress=false", "run.tensorboard=false"]
        + [f'train.init_from="{parent}"', f'train.distill_teacher="{parent}"']
        + NEW_DEFAULTS
        + FINETUNE
        + extra
    )


def train_student(name: str, parent: str, out: Path, root: str | None, smoke: bool) -> Path:
    from spquant.train import load_config, train

    run_dir = out / name
    if (run_dir / "run.json").is_file():
        return run_dir
    sets = overrides(parent, STUDENTS[name][1], root) + (
        ["train.max_steps=2", "data.test_subset=200"] if smoke else []
    )
    t0, load0 = time.time(), os.getloadavg()
    train(
        load_config("mnist-dvs:quant", sets),
        run_dir,
        resume=(run_dir / "checkpoints").is_dir(),
        progress=False,
    )
    record = {"sets": sets, "wall_s": time.time() - t0, "load_start": load0, "load_end": os.getloadavg()}
    (run_dir / "experiment.json").write_text(json.dumps(record, indent=1))
    return run_dir


def measure(run_dir: Path, integer: bool) -> dict:
    """Deployed memory (as `spquant cost --checkpoint`), the export, and the limits of the ratio."""
    from spquant.cost.cli import deployed_for_model
    from spquant.deploy import file_report
    from spquant.train import load_run

    cache = run_dir / "binary_memory.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("integer") or not integer:
            return cached
    loaded = load_run(run_dir)
    model, cfg = loaded["model"], loaded["config"]
    mem = deployed_for_model(model, (cfg.model.in_channels, *cfg.model.input)).to_dict()
    spq = run_dir / "model.spq"
    done = subprocess.run(
        [sys.executable, "-m", "spquant", "export", str(run_dir), "-o", str(spq)], stdout=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(f"spquant export {run_dir} failed")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    out = {
        "deployed": mem,
        "spq_bytes": file_report(spq)["file_bytes"],
        "weights": sum(m.weight.numel() for m in layers),
        "first_weights": layers[0].weight.numel(),
    }
    if integer:
        from results import integer_row

        out["integer"] = integer_row({"dir": str(run_dir)})
    cache.write_text(json.dumps(out, indent=1))
    return out


def limits(m: dict) -> dict:
    """The ratio without each limit, on the same network: fixed-point parameters free, then every
    weight (first conv too) at 1 bit; and the weights' and the membrane's own ratios."""
    d = m["deployed"]
    k = d["by_kind"]
    neurons = k["membrane"] * 8 / 1.6
    return {
        "share_weights": k["weights"] / d["total_bytes"],
        "share_fixed": d["fixed_point_bytes"] / d["total_bytes"],
        "share_membrane": k["membrane"] / d["total_bytes"],
        "no_fixed": d["fp32_bytes"] / (k["weights"] + k["membrane"]),
        "all_1bit_no_fixed": d["fp32_bytes"] / (m["weights"] / 8 + k["membrane"]),
        "weights_alone": 4 * m["weights"] / k["weights"],
        "membrane_alone": 4 * neurons / k["membrane"],
    }


def render(parent: Path, rows: dict[str, tuple[dict, dict, dict]], command: str) -> list[str]:
    pm = json.loads((parent / "run.json").read_text())["metrics"]
    pa = 100 * pm["test_accuracy"]
    lines = [
        START,
        "## Binary weights: memory as deployed on the RESULTS.md network",
        "",
        f"Generated by `{command}` (every number is read from a run).",
        "",
        f"* Parent: the FP32 SNN `{parent.name}` of `experiments/sparsity.py --budget cpu --epochs 2` (VGG-9 width 1/8, "
        f"MNIST as emulated events, 15,000 training images, 2 epochs, T = 4, 32x32): {pa:.2f} %.",
        "* Each student starts from it (`train.init_from`, BN recalibrated), distils from it (weight 0.5, temperature 2, "
        "with TET), learns per-channel weight steps and fine-tunes 1 epoch at lr 5e-4; one seed, 1 torch thread.",
        "* Memory as deployed: `spquant cost --checkpoint RUN --json` (`deployed`): packed weight codes (binary 8 per byte, "
        "ternary 5 per byte), fixed-point multipliers, biases, shifts and integer thresholds at their minimal widths, "
        "the ternary membrane of one sample at one step at 1.6 bits; against the same network deployed in FP32.",
        "",
        "| student | accuracy % | drop vs parent, pt | memory as deployed | weights / fixed-point / membrane (share of bytes) "
        "| `.spq` file | integer interpreter | wall time |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for name, (run, m, exp) in rows.items():
        a = 100 * run["metrics"]["test_accuracy"]
        d, lim = m["deployed"], limits(m)
        i = m.get("integer")
        interp = (
            f"{100 * i['accuracy']:.2f} % (agrees with fake-quant on {100 * i['prediction_agreement_with_fake_quant']:.2f} %)"
            if i
            else "not run"
        )
        lines.append(
            f"| {name}: {STUDENTS[name][0]} | {a:.2f} | {pa - a:+.2f} | {d['reduction']:.2f}x ({d['total_bytes']:,.0f} B vs "
            f"{d['fp32_bytes']:,.0f} B) | {100 * lim['share_weights']:.1f} / {100 * lim['share_fixed']:.1f} / "
            f"{100 * lim['share_membrane']:.1f} % | {m['spq_bytes']:,} B | {interp} | "
            f"{exp['wall_s'] / 60:.1f} min (load {exp['load_start'][0]:.1f} -> {exp['load_end'][0]:.1f}) |"
        )
    if "binary" in rows:
        m = rows["binary"][1]
        lim = limits(m)
        lines += [
            "",
            f"What limits the binary ratio: its weights alone reduce {lim['weights_alone']:.2f}x (1 bit against 32; the "
            f"{m['first_weights']} first-conv weights stay at 8 bits), but the ternary membrane, {100 * lim['share_membrane']:.1f} % "
            f"of the deployed bytes, only {lim['membrane_alone']:.2f}x (1.6 bits). With the fixed-point parameters "
            f"({100 * lim['share_fixed']:.1f} %) free the ratio would be {lim['no_fixed']:.2f}x, and with the first conv at "
            f"1 bit too {lim['all_1bit_no_fixed']:.2f}x: the membrane caps this network below 32x.",
        ]
    return lines + ["", END]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True, help="the trained FP32 run folder")
    ap.add_argument("--out", default="runs/binary")
    ap.add_argument("--root", default=None, help="data.root of full MNIST (default: the recipe's)")
    ap.add_argument("--students", default="binary,ternary")
    ap.add_argument(
        "--integer", action="store_true", help="also run the integer interpreter on the test split"
    )
    ap.add_argument("--write", default=None, help="markdown file whose binary_memory section is replaced")
    ap.add_argument(
        "--smoke", action="store_true", help="2 steps per run, 200 test images (checks the script)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    parent, out = Path(args.parent), Path(args.out)
    rows = {}
    for name in [s.strip() for s in args.students.split(",") if s.strip()]:
        run_dir = train_student(name, str(parent), out, args.root, args.smoke)
        run = json.loads((run_dir / "run.json").read_text())
        exp = json.loads((run_dir / "experiment.json").read_text())
        rows[name] = (run, measure(run_dir, args.integer), exp)
    command = (
        "python experiments/binary_memory.py --parent " + str(parent) + (" --integer" if args.integer else "")
    )
    lines = render(parent, rows, command)
    if args.write:
        write_marked(Path(args.write), lines, START, END)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
