"""GPU check (prepared; NOT run in the CPU-only task that wrote it, so no results are claimed).

Run on a machine with a CUDA GPU:

    python benchmarks/gpu_check.py [--batch 32] [--T 10] [--rounds 10] [--json gpu_results.json]

1. Correctness: the fused LIF on CUDA vs on CPU, same inputs (float32 and float64; FP32, ternary and
   5-level membranes; per-channel learnable threshold; learned gate; a prior): spikes and returned
   membrane must be identical, gradients allclose (CUDA's sigmoid/exp may differ in the last bits).
   Also fused vs reference on CUDA.
2. Timing: the paper-scale VGG-9 (64-128-P-256-256-P-512-512-P-512-512-P + linear) on 2x48x48 input
   (DVS-like), T=10: training step (forward + backward + Adam) of the ReLU ANN twin (T*B folded),
   FP32 SNN and SpQuant SNN (ternary weights, ternary membrane, learnable threshold), each with the
   reference and the fused LIF backend; median after warm-up, with torch.cuda.synchronize(); peak
   CUDA memory per variant (torch.cuda.max_memory_allocated). Prints ratios and the card's name.

Not named bench_*.py on purpose: run_all.py (CPU) does not run it. Exit code 0 with a message when no
CUDA device is present.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from spquant import LIF, ConvBNLIF, IntegerMembrane, SeqModule, TernaryWeight, Triangle  # noqa: E402
from spquant.neuron import lif_reference  # noqa: E402
from spquant.neuron.fused import lif_fused  # noqa: E402

VGG9 = (64, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P")


class _Prior:
    def keep_mask(self, m_prev, membrane):
        return (m_prev.mean(dim=(-2, -1), keepdim=True) > -0.8).to(m_prev.dtype)


def check_correctness() -> dict:
    out = {}
    for dtype in (torch.float32, torch.float64):
        for name, q in (("fp32", None), ("ternary", IntegerMembrane()), ("five", IntegerMembrane(-3, 1))):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(10, 8, 16, 12, 12, generator=g, dtype=dtype) * 1.3
            th = torch.rand(16, 1, 1, generator=g, dtype=dtype) + 0.5
            gate = (torch.rand(10, 8, 16, 1, 1, generator=g) > 0.3).to(dtype)
            gs = torch.randn(x.shape, generator=g, dtype=dtype)
            res = {}
            for dev in ("cpu", "cuda"):
                for fn in (lif_fused, lif_reference):
                    xi = x.to(dev).requires_grad_()
                    ti = th.to(dev).requires_grad_()
                    gi = gate.to(dev).requires_grad_()
                    s, m = fn(xi, ti, 0.5, q, Triangle(), gi, _Prior(), True)
                    (s * gs.to(dev)).sum().backward()
                    res[(dev, fn.__name__)] = [t.detach().cpu() for t in (s, m, xi.grad, ti.grad, gi.grad)]
            base = res[("cpu", "lif_fused")]
            for key, r in res.items():
                same_fwd = torch.equal(base[0], r[0]) and torch.equal(base[1], r[1])
                tol = 1e-4 if dtype == torch.float32 else 1e-9
                grads = all(torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(base[2:], r[2:]))
                out[f"{dtype} {name} {key[0]} {key[1]} vs cpu fused"] = {"forward_identical": same_fwd, "grads_allclose": grads}
    return out


def vgg9(kind: str, backend: str, in_ch: int = 2, image: int = 48, classes: int = 10) -> nn.Module:
    layers, c_in, side = [], in_ch, image
    for c in VGG9:
        if c == "P":
            layers.append(SeqModule(nn.AvgPool2d(2)) if kind != "ann" else nn.AvgPool2d(2))
            side //= 2
            continue
        if kind == "ann":
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        else:
            spq = kind == "spquant"
            neuron = LIF(membrane=IntegerMembrane() if spq else None, learn_threshold="layer" if spq else False, backend=backend)
            layers.append(ConvBNLIF(c_in, c, weight_quant=TernaryWeight() if spq else None, neuron=neuron))
        c_in = c
    flat = nn.Flatten() if kind == "ann" else SeqModule(nn.Flatten())
    head = nn.Linear(c_in * side * side, classes)
    layers += [flat, head if kind == "ann" else SeqModule(head)]
    return nn.Sequential(*layers)


def time_step(kind: str, backend: str, T: int, batch: int, rounds: int, dev: str) -> tuple[float, int]:
    torch.manual_seed(0)
    model = vgg9(kind, backend).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (torch.rand(T, batch, 2, 48, 48, device=dev) < 0.1).float()
    y = torch.randint(0, 10, (batch,), device=dev)
    if kind == "ann":
        x = x.reshape(T * batch, 2, 48, 48)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x).reshape(T, batch, -1).mean(0)
        F.cross_entropy(out, y).backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", default="")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check (this script needs a GPU)")
        return 0
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": args.batch, "T": args.T}
    result["correctness"] = check_correctness()
    ok = all(v["forward_identical"] and v["grads_allclose"] for v in result["correctness"].values())
    print(f"device: {result['device']}  correctness: {'OK' if ok else 'MISMATCH'}")
    for k, v in result["correctness"].items():
        if not (v["forward_identical"] and v["grads_allclose"]):
            print("  mismatch:", k, v)
    timings = {}
    for kind, backend in (("ann", "-"), ("fp32", "reference"), ("fp32", "fused"), ("spquant", "reference"), ("spquant", "fused")):
        t, mem = time_step(kind, backend, args.T, args.batch, args.rounds, "cuda")
        timings[f"{kind}/{backend}"] = {"s_per_step": t, "peak_mib": mem / 2**20}
        print(f"  VGG-9 48x48 T={args.T} B={args.batch} {kind:8s} {backend:9s} {t * 1e3:8.1f} ms/step  peak {mem / 2**20:8.1f} MiB")
    result["timings"] = timings
    a = timings["ann/-"]["s_per_step"]
    for backend in ("reference", "fused"):
        b = timings[f"fp32/{backend}"]["s_per_step"]
        c = timings[f"spquant/{backend}"]["s_per_step"]
        print(f"  {backend}: b/a = {b / a:.3f} (goal <= 1.3)  c/b = {c / b:.3f} (goal <= 1.25)")
    for kind in ("fp32", "spquant"):
        r, f = timings[f"{kind}/reference"], timings[f"{kind}/fused"]
        print(f"  {kind}: fused speed-up {r['s_per_step'] / f['s_per_step']:.3f}x, memory fused/reference "
              f"{f['peak_mib'] / r['peak_mib']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
