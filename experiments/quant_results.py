"""Tables of experiments/quant_stats.py, regenerated from its run folders (nothing typed by hand).

Accuracy is the mean and sample standard deviation over the seeds; a drop is the paired
difference student - its own FP32 parent, per seed, then mean +- sd, and it is called *within
noise* when the 95 % t-interval of the paired differences contains 0 (t = 4.30 for 3 seeds).
Memory as deployed is counted on each trained model's integer program (spquant.deploy.memory);
the paper's convention and our packed convention come from the run's own summary.

    python experiments/quant_results.py --runs runs/quant --write RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from quant_stats import budget_and_log  # noqa: E402
from sections import write_marked  # noqa: E402

START, END = "<!-- quant_results:start -->", "<!-- quant_results:end -->"
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}
ROWS = [
    ("fp32", "FP32 SNN"),
    ("quant", "Quant-SNN (ternary, 8-bit first/last)"),
    ("spquant", "SpQuant-SNN (ternary, 8-bit first/last, gates)"),
    ("binary", "Binary-weight SNN (1-bit hidden + classifier, 8-bit first)"),
]
LEVER_ROWS = [
    (
        "fp32-continued",
        "control: the FP32 SNN itself fine-tuned the same way (init-from, 1 epoch, self-distillation)",
    ),
    ("quant", "new defaults: init-from FP32 + distillation (w 0.5, tau 2) + learned per-channel steps"),
    ("quant-scratch", "from scratch (old path: TWN scales, no distillation), same total epochs"),
    ("quant-no-distill", "init-from, learned per-channel steps, no distillation"),
    ("quant-stat-scale", "init-from + distillation, fixed TWN scales (no learned steps)"),
    ("quant-lsq-layer", "init-from + distillation, learned per-layer step"),
    ("quant-vth-channel", "new defaults + learned per-channel thresholds"),
    ("quant-ternary-first-last", "new defaults, ternary first conv and classifier"),
    ("quant-4bit-first-last", "new defaults, 4-bit first conv and classifier"),
    (
        "spquant-keep-0.5",
        "SpQuant-SNN, new defaults, gates opened then trained to a 0.5 MAC budget (quant.prune.keep)",
    ),
]


def _run(path: Path) -> dict | None:
    p = path / "run.json"
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def _deployed(path: Path) -> dict | None:
    from spquant.cost.cli import deployed_for_model
    from spquant.train import load_run

    cache = path / "deployed_memory.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    loaded = load_run(path)
    cfg = loaded["config"]
    mem = deployed_for_model(loaded["model"], (cfg.model.in_channels, *cfg.model.input))
    d = mem.to_dict() if mem is not None else None
    cache.write_text(json.dumps(d))
    return d


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs):.2f}"


def t_interval(ds: list[float]) -> tuple[float, float] | None:
    """The 95 % t-interval (low, high) of the mean of paired differences; None under 2 values."""
    if len(ds) < 2:
        return None
    m = statistics.mean(ds)
    half = T95.get(len(ds), 2.0) * statistics.stdev(ds) / math.sqrt(len(ds))
    return m - half, m + half


def _noise(ds: list[float]) -> str:
    ci = t_interval(ds)
    if ci is None:
        return "one seed"
    return "contains 0: within noise" if ci[0] <= 0 <= ci[1] else "excludes 0"


def dataset_table(runs: Path, name: str) -> list[str]:
    seeds = sorted(p.name for p in (runs / name).glob("seed*") if (p / "fp32" / "run.json").is_file())
    if not seeds:
        return []
    lines = [
        f"### {name} ({len(seeds)} seed(s): {', '.join(seeds)})",
        "",
        "| row | accuracy % (mean +- sd) | drop vs its FP32 parent, pt (mean +- sd; negative = better) | 95 % t-interval of the drop | "
        "memory reduction as deployed | paper's 2-bit / packed convention | FLOPs reduction |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for key, label in ROWS:
        accs, drops, red, paper, packed, flops = [], [], [], [], [], []
        for s in seeds:
            r = _run(runs / name / s / key)
            f = _run(runs / name / s / "fp32")
            if r is None or f is None:
                continue
            m = r["metrics"]
            accs.append(100 * m["test_accuracy"])
            drops.append(100 * (f["metrics"]["test_accuracy"] - m["test_accuracy"]))
            paper.append(m.get("memory_reduction", float("nan")))
            packed.append(m.get("memory_reduction_packed", float("nan")))
            if "flops_reduction" in m:
                flops.append(m["flops_reduction"])
            if key != "fp32":
                d = _deployed(runs / name / s / key)
                if d is not None:
                    red.append(d["reduction"])
        if not accs:
            continue
        drop = "0 (reference)" if key == "fp32" else _ms(drops)
        ci = "" if key == "fp32" else _noise(drops)
        mem = "1.00x" if key == "fp32" else (f"{statistics.mean(red):.2f}x" if red else "n/a")
        conv = (
            "1.00x / 1.00x"
            if key == "fp32"
            else f"{statistics.mean(paper):.2f}x / {statistics.mean(packed):.2f}x"
        )
        fl = f"{statistics.mean(flops):.2f}x" if flops else "1.00x (dense)"
        lines.append(f"| {label} | {_ms(accs)} | {drop} | {ci} | {mem} | {conv} | {fl} |")
    return lines + [""]


def lever_table(runs: Path) -> list[str]:
    base = runs / "proxy" / "seed0"
    ref = _run(base / "quant")
    fp = _run(base / "fp32")
    if ref is None or fp is None:
        return []
    lines = [
        "### Levers (proxy, seed 0; compare the differences with the seed spread above)",
        "",
        f"FP32 parent: {100 * fp['metrics']['test_accuracy']:.2f} %.",
        "",
        "| variant | accuracy % | vs new defaults, pt | drop vs FP32 parent, pt (negative = better) | "
        "memory reduction as deployed | FLOPs reduction |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in LEVER_ROWS:
        r = _run(base / key)
        if r is None:
            lines.append(f"| {label} | not run | | | | |")
            continue
        a = 100 * r["metrics"]["test_accuracy"]
        d = _deployed(base / key)
        mem = f"{d['reduction']:.2f}x" if d else "n/a"
        fl = r["metrics"].get("flops_reduction")
        fl = f"{fl:.2f}x" if fl else "1.00x (dense)"
        lines.append(
            f"| {label} | {a:.2f} | {a - 100 * ref['metrics']['test_accuracy']:+.2f} | "
            f"{100 * fp['metrics']['test_accuracy'] - a:+.2f} | {mem} | {fl} |"
        )
    ctrl = _run(base / "fp32-continued")
    if ctrl is not None:
        c = 100 * ctrl["metrics"]["test_accuracy"]
        q = 100 * ref["metrics"]["test_accuracy"]
        lines += [
            "",
            f"The fine-tune itself is worth something: the FP32 SNN trained one more epoch the same way reaches "
            f"{c:.2f} % ({c - 100 * fp['metrics']['test_accuracy']:+.2f} pt over its parent), so against that "
            f"control the new-default Quant-SNN is {c - q:+.2f} pt behind (one seed).",
        ]
    return lines + [""]


def vgg9_memory_table() -> list[str]:
    """Memory as deployed of the full VGG-9 plan at width 1/8, 32x32 (the RESULTS.md architecture)."""
    from spquant.cost.cli import deployed_for_model, spec_for_bits
    from spquant.models import build_model

    lines = [
        "### Memory as deployed, VGG-9 plan at width 1/8, 1x32x32 (fresh instance: fixed-point widths of "
        "untrained BN)",
        "",
        "| weights (hidden / first / last bits) | weights MB | fixed-point MB | membrane MB | total MB | FP32 MB | reduction |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, first, last in [(2, 8, 8), (2, 8, 2), (2, 2, 2), (2, 4, 4), (1, 8, 1), (1, 1, 1)]:
        torch.manual_seed(0)
        spec = spec_for_bits(w, 1.58, "quant", first, last)
        model = build_model(
            "vgg9", num_classes=10, in_channels=1, input_size=(32, 32), width=0.125, spec=spec
        )
        m = deployed_for_model(model, (1, 32, 32))
        lines.append(
            f"| {w} / {first} / {last} | {m.weight_bytes / 1e6:.4f} | {m.fixed_point_bytes / 1e6:.4f} | "
            f"{m.membrane_bytes / 1e6:.4f} | {m.total_mb:.4f} | {m.fp32_bytes / 1e6:.4f} | {m.reduction:.2f}x |"
        )
    return lines + [""]


def render(runs: Path) -> str:
    budget, log = budget_and_log(runs)
    lines = [
        START,
        "## Quantizing a trained SNN: 3 seeds, mnist-dvs and a harder proxy",
        "",
        "Generated by `python experiments/quant_results.py` from the run folders of "
        "`experiments/quant_stats.py` (every number is read from a run).",
        "",
        f"* Network: reduced VGG plan {budget.get('plan', '?')} (CPU scale). Budget: 1 torch thread per run, "
        "one run at a time, `nice -n 10`, on a 2-core machine shared with other jobs "
        f"(1-minute load average at the start: {', '.join(f'{v:.1f}' for v in budget.get('load_at_start', [])) or '?'}).",
        "* proxy (harder): the first 6,000 MNIST training images (a tenth) and all 10,000 test images, each "
        "distorted once by a random affine (rotation +-25 deg, scale 0.75-1.15, shear +-15 deg, shift +-3 px) "
        "and Gaussian noise (sigma 0.25); direct encoding, T = 2, 28x28.",
        "* mnist-dvs: MNIST through the project's event-camera emulator (N-MNIST-like saccades), the first "
        "3,000 training and 2,000 test images, T = 4 ON/OFF count frames cropped to 32x32.",
        "* FP32 SNN: 2 epochs from scratch, Adam lr 2e-3 cosine, batch 64, TET lam 0.05. Every other row "
        "starts from its own seed's FP32 run (`--init-from`: exact load, BN recalibrated on 20 batches, "
        "gates opened) and fine-tunes 1 epoch at lr 5e-4 with the new defaults: distillation from that FP32 "
        "run (weight 0.5, temperature 2, with TET) and learned per-channel weight steps (LSQ).",
        "* Memory as deployed: the trained model's integer program: packed weight codes, per-channel "
        "fixed-point multipliers and biases, shifts and integer thresholds at the widths their values need, "
        "gate tables, the packed membrane (1.6 bits) of one sample at one step; against the same network "
        "deployed in FP32 (weights, folded BN, thresholds, membrane at 32 bits). With ternary codes and a "
        "1.6-bit membrane the ceiling is 32 / 1.6 = 20x; binary weights lift the weight part to 32x.",
        "* The new defaults are passed explicitly by the experiment (`quant.weight_scale`, `train.distill_*`); "
        "the library and recipe defaults are unchanged. Each run's memory as deployed is cached in its folder "
        "(`deployed_memory.json`), so the tables regenerate without re-folding (runs written in an older "
        "checkpoint format stay readable that way).",
        "",
    ]
    for name in ("proxy", "mnist-dvs"):
        lines += dataset_table(runs, name)
    lines += lever_table(runs)
    lines += vgg9_memory_table()
    times = [ln for ln in log if " in " in ln and "%" in ln]
    if times:
        lines += ["Run log (wall time per run, including evaluation):", "", "```", *times, "```", ""]
    lines.append(END)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/quant")
    ap.add_argument(
        "--write", default=None, help="markdown file whose quant_results section is replaced (or appended)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    text = render(Path(args.runs))
    if args.write:
        write_marked(Path(args.write), [text], START, END)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
