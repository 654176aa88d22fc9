"""Process-wide throughput levers: allocator (glibc vs tcmalloc via LD_PRELOAD) x torch threads (1 vs
all cores), each in a fresh subprocess, on the CPU-scale VGG of bench_neuron (T=4, batch 32).

Every child times, round-robin, the ANN twin, the FP32 SNN and the SpQuant SNN (fused backend,
T folded into the batch) and the FP32 SNN with per-step convs. Ratios are against the glibc /
1-thread child of the same run (children run one after another, so load changes between them add
noise; the in-child ratios do not have that problem).

    python benchmarks/bench_throughput.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def child(threads: int, T: int, batch: int, rounds: int) -> dict:
    import torch
    from _common import make_step, relu_vgg, spiking_vgg, time_interleaved

    torch.set_num_threads(threads)
    steps = {
        "ann": make_step(relu_vgg(), T, batch, folded_ann=True),
        "fp32": make_step(spiking_vgg("fp32", "fused"), T, batch),
        "spquant": make_step(spiking_vgg("spquant", "fused"), T, batch),
        "fp32_perstep": make_step(spiking_vgg("fp32", "fused", fold_time=False), T, batch),
    }
    return time_interleaved(steps, warmup=1, rounds=rounds)


def main(T: int = 4, batch: int = 32, rounds: int = 4) -> dict:
    from _common import row

    from spquant.perf import tcmalloc_path

    tc = tcmalloc_path()
    cores = os.cpu_count() or 1
    configs = [("glibc", 1), ("glibc", cores)]
    if tc:
        configs += [("tcmalloc", 1), ("tcmalloc", cores)]
    res = {}
    for alloc, threads in configs:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if alloc == "tcmalloc":
            env["LD_PRELOAD"] = tc
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(threads),
                "--T",
                str(T),
                "--batch",
                str(batch),
                "--rounds",
                str(rounds),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=HERE,
            timeout=3600,
        )
        if proc.returncode == 0:
            res[(alloc, threads)] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            res[(alloc, threads)] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    rows = {}
    base = res[("glibc", 1)]
    for (alloc, threads), r in res.items():
        tag = f"{alloc}, {threads} thread{'s' if threads > 1 else ''}"
        if "error" in r:
            rows[f"levers: {tag}"] = row(None, "", note="failed: " + r["error"])
            continue
        for k in ("ann", "fp32", "spquant", "fp32_perstep"):
            rows[f"time {k} ({tag}) [s/step]"] = row(round(r[k], 4), "s")
        if "error" not in base:
            rows[f"speed-up FP32 SNN step vs glibc/1 thread ({tag})"] = row(
                round(base["fp32"] / r["fp32"], 3), "x"
            )
            rows[f"speed-up SpQuant step vs glibc/1 thread ({tag})"] = row(
                round(base["spquant"] / r["spquant"], 3), "x"
            )
        rows[f"b/a FP32 SNN / ANN ({tag})"] = row(
            round(r["fp32"] / r["ann"], 3), "ratio", "<= 1.3", r["fp32"] / r["ann"] <= 1.3
        )
        rows[f"c/b SpQuant / FP32 SNN ({tag})"] = row(
            round(r["spquant"] / r["fp32"], 3), "ratio", "<= 1.25", r["spquant"] / r["fp32"] <= 1.25
        )
        rows[f"per-step / folded conv, FP32 ({tag})"] = row(
            round(r["fp32_perstep"] / r["fp32"], 3), "ratio", note="< 1 means per-step is faster"
        )
    if not tc:
        rows["levers: tcmalloc"] = row(None, "", note="skipped: libtcmalloc_minimal.so.4 not installed")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--child", type=int)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    if args.child:
        sys.path.insert(0, HERE)
        print(json.dumps(child(args.child, args.T, args.batch, args.rounds)))
    else:
        for k, v in main(args.T, args.batch, args.rounds).items():
            print(
                f"{k:60s} {v['value']!s:>10} {v['goal'] or '':>8} {'' if v['met'] is None else ('met' if v['met'] else 'MISSED')} {v['note']}"
            )
