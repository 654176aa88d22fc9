"""Training-step time of a CPU-scale spiking VGG (channels 32-64-128-128, 3x32x32, T=4, batch 32).

All variants are timed in the same run, round-robin (one step of every variant, then the next
round), and every goal is a ratio of two variants timed back to back in the same round: the table
gives the median over rounds and the spread (min-max) of those per-round ratios, for the
process's CPU time (steady on a busy machine: with one thread it excludes the time other processes
hold the cores) and for wall-clock time, and the load average before and after (on a loaded
machine single timings vary a lot).

  a      ANN: the same convs with ReLU on the T*B folded batch (the lower bound, no T loop)
  b      FP32 SNN (FP32 weights and membrane), fused LIF (the default)
  c      SpQuant: ternary weights + ternary membrane + learnable threshold, fused LIF
  cf     c plus the real learned channel gate and membrane prior (QuantSpec('spquant') blocks)
  *_ref  the same with the reference LIF (autograd through the readable loop)
  *_cmp  the same with the fused LIF's torch.compile'd kernels (compile time excluded: warm-up)
  sj     SpikingJelly's multi-step LIFNode (2.0: its CPU custom op; 0.0.0.0.14: backend='torch'),
         same convs, FP32, Sigmoid surrogate, if SpikingJelly is installed (``pip install .[bench]``)

    python benchmarks/bench_neuron.py [--T 4] [--batch 32] [--rounds 7] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import (
    load_average,
    make_step,
    ratio_stats,
    relu_vgg,
    row,
    spiking_vgg,
    spikingjelly_version,
    spikingjelly_vgg,
    time_interleaved,
)


def main(
    T: int = 4,
    batch: int = 32,
    rounds: int = 7,
    warmup: int = 2,
    threads: int = 1,
    compiled: bool = True,
    reference: bool = True,
) -> dict:
    # 1 thread by default: on a loaded dual-core CPU 2 threads were 2-3x slower (bench_throughput.py)
    torch.set_num_threads(threads)
    load_before = load_average()
    steps = {"a": make_step(relu_vgg(), T, batch, folded_ann=True)}
    for kind, key in (("fp32", "b"), ("spquant", "c"), ("spquant_full", "cf")):
        steps[key] = make_step(spiking_vgg(kind, "fused"), T, batch)
        if reference:
            steps[f"{key}_ref"] = make_step(spiking_vgg(kind, "reference"), T, batch)
        if compiled:
            steps[f"{key}_cmp"] = make_step(spiking_vgg(kind, "fused"), T, batch, compiled=True)
    sj_model, sj_reason = spikingjelly_vgg()
    if sj_model is not None:
        steps["sj"] = make_step(sj_model, T, batch, sj=True)
    t0 = time.time()
    if compiled:  # compile outside the timed rounds (it is a one-off per process)
        for key in [k for k in steps if k.endswith("_cmp")]:
            steps[key]()
    compile_s = time.time() - t0
    both = time_interleaved(steps, warmup=warmup, rounds=rounds, raw=True, clock="both")

    rows = {}
    for k in steps:
        rows[f"time {k} [s/step, median; CPU / wall]"] = row(
            f"{statistics.median(both['cpu'][k]):.3f} / {statistics.median(both['wall'][k]):.3f}", "s"
        )

    def ratio(name, num, den, goal=None, better="<="):
        if num not in steps or den not in steps:
            return
        for clock in ("cpu", "wall"):
            st = ratio_stats(both[clock], num, den)
            met = None
            if goal is not None:
                met = st["median"] <= goal if better == "<=" else st["median"] >= goal
            rows[f"{name} [{clock}]"] = row(
                round(st["median"], 3),
                "ratio",
                None if goal is None else f"{better} {goal}",
                met,
                f"spread {st['min']:.3f}-{st['max']:.3f} over {st['rounds']} rounds",
            )

    for sfx, label in (("", "fused"), ("_cmp", "fused, compiled kernels"), ("_ref", "reference LIF")):
        ratio(f"FP32 SNN / ANN ({label})", f"b{sfx}", "a", 1.3)
        ratio(f"SpQuant / FP32 SNN ({label})", f"c{sfx}", f"b{sfx}", 1.15)
        ratio(f"SpQuant+gate+prior / FP32 SNN ({label})", f"cf{sfx}", f"b{sfx}", 1.15)
    for key in ("b", "c", "cf"):
        ratio(f"speed-up fused over reference ({key})", f"{key}_ref", key)
        ratio(f"speed-up compiled over eager fused ({key})", key, f"{key}_cmp")
    if sj_model is not None:
        for key, label in (
            ("b", "FP32, fused"),
            ("b_cmp", "FP32, compiled"),
            ("c", "SpQuant, fused"),
            ("c_cmp", "SpQuant, compiled"),
        ):
            ratio(f"SpikingJelly {spikingjelly_version()} time / ours ({label})", "sj", key, 1.5, ">=")
    else:
        rows["SpikingJelly time / ours"] = row(None, "ratio", ">= 1.5", None, f"skipped: {sj_reason}")
    rows["config"] = row(
        f"T={T} batch={batch} rounds={rounds} warmup={warmup} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} spikingjelly={spikingjelly_version()} compile_s={compile_s:.0f} "
        f"load before {load_before}, after {load_average()}",
        "",
    )
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-compile", action="store_true", help="skip the compiled-kernel variants")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-LIF variants")
    args = p.parse_args()
    res = main(
        args.T, args.batch, args.rounds, args.warmup, args.threads, not args.no_compile, not args.no_reference
    )
    for k, v in res.items():
        met = "" if v["met"] is None else ("met" if v["met"] else "MISSED")
        print(f"{k:58s} {v['value']!s:>10} {v['goal'] or '':>8} {met:6s} {v['note']}")
    print(json.dumps(res))
