"""Training-step time of a CPU-scale spiking VGG (channels 32-64-128-128, 3x32x32, T=4, batch 32).

All variants are timed in the same run, round-robin, median over several steps after warm-up, and
reported as ratios (never absolute goals: the machine is shared and noisy):

  a  ANN: the same convs with ReLU on the T*B folded batch (the lower bound, no T loop)
  b  FP32 LIF (FP32 weights and membrane)
  c  SpQuant: ternary membrane + learnable threshold + ternary weights
  c+g  c with a STAND-IN channel gate (random fixed {0,1} [T,B,C,1,1]; the learned gate of the
       pruning module does not exist yet)
  sj SpikingJelly's multi-step LIFNode (backend='torch') with the same convs, if it imports

each LIF variant with the 'reference' and the 'fused' backend, plus per-step convs (fold_time=False).

    python benchmarks/bench_neuron.py [--T 4] [--batch 32] [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import make_step, relu_vgg, row, spiking_vgg, spikingjelly_vgg, time_interleaved


def main(T: int = 4, batch: int = 32, rounds: int = 7, warmup: int = 2, threads: int = 1) -> dict:
    # 1 thread by default: on a loaded dual-core CPU 2 threads were 2-3x slower
    # (see bench_throughput.py for 1 vs 2 threads); --threads changes it
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    steps = {"a_ann_relu": make_step(relu_vgg(), T, batch, folded_ann=True)}
    for backend in ("reference", "fused"):
        steps[f"b_fp32_{backend}"] = make_step(spiking_vgg("fp32", backend), T, batch)
        steps[f"c_spquant_{backend}"] = make_step(spiking_vgg("spquant", backend), T, batch)
        steps[f"cg_spquant_gate_{backend}"] = make_step(spiking_vgg("spquant", backend, gate=True), T, batch)
    steps["b_fp32_fused_perstep"] = make_step(spiking_vgg("fp32", "fused", fold_time=False), T, batch)
    steps["c_spquant_fused_perstep"] = make_step(spiking_vgg("spquant", "fused", fold_time=False), T, batch)
    steps["c_spquant_fused_compact"] = make_step(spiking_vgg("spquant", "fused"), T, batch, compact=True)
    sj_model, sj_reason = spikingjelly_vgg()
    if sj_model is not None:
        steps["sj_fp32_lifnode"] = make_step(sj_model, T, batch, sj=True)
    med = time_interleaved(steps, warmup=warmup, rounds=rounds)

    rows = {}
    for k, v in med.items():
        rows[f"time {k} [s/step]"] = row(round(v, 4), "s")
    a = med["a_ann_relu"]
    for backend in ("reference", "fused"):
        b, c, cg = med[f"b_fp32_{backend}"], med[f"c_spquant_{backend}"], med[f"cg_spquant_gate_{backend}"]
        rows[f"b/a FP32 SNN / ANN ({backend})"] = row(round(b / a, 3), "ratio", "<= 1.3", b / a <= 1.3)
        rows[f"c/b SpQuant / FP32 SNN ({backend})"] = row(round(c / b, 3), "ratio", "<= 1.25", c / b <= 1.25)
        rows[f"(c+stand-in gate)/b ({backend})"] = row(round(cg / b, 3), "ratio", "<= 1.25", cg / b <= 1.25,
                                                     "gate = random fixed {0,1} stand-in")
    for kind in ("b_fp32", "c_spquant", "cg_spquant_gate"):
        rows[f"speed-up fused vs reference ({kind})"] = row(round(med[f"{kind}_reference"] / med[f"{kind}_fused"], 3), "x")
    rows["per-step conv / folded conv, FP32 fused"] = row(round(med["b_fp32_fused_perstep"] / med["b_fp32_fused"], 3), "ratio",
                                                         note="< 1 means per-step is faster")
    rows["per-step conv / folded conv, SpQuant fused"] = row(
        round(med["c_spquant_fused_perstep"] / med["c_spquant_fused"], 3), "ratio", note="< 1 means per-step is faster")
    rows["compact_spikes() time / plain, SpQuant fused"] = row(
        round(med["c_spquant_fused_compact"] / med["c_spquant_fused"], 3), "ratio", note="memory: see bench_memory")
    if sj_model is not None:
        r = med["sj_fp32_lifnode"] / med["b_fp32_fused"]
        rows["speed-up vs SpikingJelly LIFNode (FP32, fused)"] = row(round(r, 3), "x", ">= 1.25", r >= 1.25)
        r = med["sj_fp32_lifnode"] / med["c_spquant_fused"]
        rows["speed-up vs SpikingJelly LIFNode (SpQuant, fused)"] = row(round(r, 3), "x", ">= 1.25", r >= 1.25)
    else:
        rows["speed-up vs SpikingJelly LIFNode"] = row(None, "x", ">= 1.25", None, f"skipped: {sj_reason}")
    rows["config"] = row(f"T={T} batch={batch} rounds={rounds} threads={torch.get_num_threads()} torch={torch.__version__}", "")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    res = main(args.T, args.batch, args.rounds, threads=args.threads)
    for k, v in res.items():
        print(f"{k:55s} {v['value']!s:>10} {v['goal'] or '':>8} {'' if v['met'] is None else ('met' if v['met'] else 'MISSED')} {v['note']}")
    print(json.dumps(res))
