"""GPU check: correctness of the CUDA path first, then timings. Self-checking: exit status 1 on any
mismatch, 0 when everything matches, 3 when ``--require-gpu`` is given and no CUDA device exists.

    python benchmarks/gpu_check.py --require-gpu [--batch 32] [--T 10] [--rounds 10] [--json gpu.json]
    python benchmarks/gpu_check.py --device cpu --quick --no-timing     # the same checks on the CPU

Checks (every one on ``--device``, default ``cuda`` when available):

1. Fused LIF on the device vs the reference LIF on the device and vs the fused LIF on the CPU, same
   inputs (float32 and float64; FP32, ternary and 5-level membranes; per-channel learnable threshold;
   learned gate; a prior; returned membrane): spikes and membrane identical, gradients allclose
   (device sigmoid/exp may differ from the CPU's in the last bits). The opt-in compiled kernels too
   (``--compile``; Triton on CUDA).
2. A ConvBNLIF network (SpQuant blocks with gate and prior): one training step on the device with the
   fused and with the reference LIF, same weights: outputs identical, parameter gradients allclose;
   every tensor stays on the device.
3. The integer interpreter's fast path on the device vs its numpy reference path, on a small folded
   SpQuant model: every named tensor bit-identical.
4. Timing (unless ``--no-timing``): the paper-scale VGG-9 (64-128-P-256-256-P-512-512-P-512-512-P)
   on 2x48x48 input, T=10: training step of the ReLU ANN twin (T*B folded), FP32 SNN and SpQuant SNN
   with the fused (and reference) LIF, SpikingJelly's LIFNode if installed; interleaved rounds, median
   and spread of per-round ratios, peak device memory per variant.

Not named bench_*.py on purpose: run_all.py (CPU) does not run it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spquant import LIF, ConvBNLIF, IntegerMembrane, SeqModule, TernaryWeight, Triangle
from spquant.neuron import fused, lif_reference
from spquant.neuron.fused import lif_fused

VGG9 = (64, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P")


class _Prior:
    def keep_mask(self, m_prev, membrane):
        return (m_prev.mean(dim=(-2, -1), keepdim=True) > -0.8).to(m_prev.dtype)


def _same_device(tensors, dev: torch.device) -> bool:
    return all(t is None or t.device.type == dev.type for t in tensors)


def check_lif(dev: torch.device, quick: bool, compiled: bool) -> dict:
    """Fused LIF on ``dev`` vs reference on ``dev`` vs fused on the CPU."""
    out = {}
    shape = (4, 2, 8, 6, 6) if quick else (10, 8, 16, 12, 12)
    fns = [("fused", lif_fused, False), ("reference", lif_reference, False)]
    if compiled:
        fns.append(("compiled", lif_fused, True))
    for dtype in (torch.float32, torch.float64):
        for name, q in (("fp32", None), ("ternary", IntegerMembrane()), ("five", IntegerMembrane(-3, 1))):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g, dtype=dtype) * 1.3
            th = torch.rand(shape[2], 1, 1, generator=g, dtype=dtype) + 0.5
            gate = (torch.rand(*shape[:3], 1, 1, generator=g) > 0.3).to(dtype)
            gs = torch.randn(shape, generator=g, dtype=dtype)
            res = {}
            for where in ("cpu", dev.type):
                for label, fn, comp in fns:
                    if (where, label) in res or (comp and where == "cpu" and dev.type != "cpu"):
                        continue
                    xi, ti, gi = (t.to(where).requires_grad_() for t in (x, th, gate))
                    fused.compile_kernels(comp)
                    try:
                        s, m = fn(xi, ti, 0.5, q, Triangle(), gi, _Prior(), True)
                        (s * gs.to(where)).sum().backward()
                    finally:
                        fused.compile_kernels(False)
                    tensors = (s, m, xi.grad, ti.grad, gi.grad)
                    res[(where, label)] = (
                        [t.detach().cpu() for t in tensors],
                        _same_device(tensors, torch.device(where)),
                    )
            base, _ = res[("cpu", "fused")]
            tol = 1e-4 if dtype == torch.float32 else 1e-9
            for key, (r, on_device) in res.items():
                same_fwd = torch.equal(base[0], r[0]) and torch.equal(base[1], r[1])
                grads = all(torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(base[2:], r[2:]))
                out[f"lif {str(dtype)[6:]} {name} {key[0]} {key[1]} vs cpu fused"] = {
                    "forward_identical": same_fwd,
                    "grads_allclose": grads,
                    "on_device": on_device,
                }
    return out


def _spquant_net(backend: str):
    from spquant.models import QuantSpec

    torch.manual_seed(0)
    spec = QuantSpec("spquant", backend=backend)
    return nn.Sequential(
        spec.conv_block(2, 8, "hidden"),
        SeqModule(nn.AvgPool2d(2)),
        spec.conv_block(8, 16, "hidden"),
        SeqModule(nn.Flatten()),
        SeqModule(nn.Linear(16 * 8 * 8, 5)),
    )


def check_network(dev: torch.device) -> dict:
    """One training step of SpQuant blocks (gate + prior) with either LIF backend, on ``dev``."""
    torch.backends.cudnn.deterministic = True  # the same conv algorithm for both backends
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 3, 2, 16, 16, generator=g) < 0.3).float().to(dev)
    y = torch.tensor([0, 3, 4]).to(dev)
    res = {}
    for backend in ("fused", "reference"):
        net = _spquant_net(backend).to(dev).train()
        out = net(x)
        F.cross_entropy(out.mean(0), y).backward()
        grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
        res[backend] = (out.detach(), grads, _same_device([out, *grads.values()], dev))
    (o_f, g_f, d_f), (o_r, g_r, d_r) = res["fused"], res["reference"]
    close = g_f.keys() == g_r.keys() and all(
        torch.allclose(g_f[k], g_r[k], rtol=1e-4, atol=1e-5) for k in g_r
    )
    return {
        "network fused vs reference": {
            "forward_identical": torch.equal(o_f, o_r),
            "grads_allclose": close,
            "on_device": d_f and d_r,
        }
    }


def check_interpreter(dev: torch.device) -> dict:
    """The integer interpreter's fast path on ``dev`` vs its numpy reference path."""
    from spquant.deploy.fold import fold_model
    from spquant.deploy.interpreter import Interpreter
    from spquant.models import VGG9, QuantSpec

    torch.manual_seed(0)
    model = VGG9(
        10,
        in_channels=2,
        input_size=(16, 16),
        plan=(8, "A", 16, "A"),
        spec=QuantSpec("spquant", learn_threshold="layer"),
    ).eval()
    for m in model.modules():  # a briefly "trained" network: thresholds and BN statistics off their init
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    program = fold_model(model, (2, 16, 16), input_bits=3, input_scale=1.0)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, (4, 3, 2, 16, 16))
    ref = Interpreter(program).run_all(codes, path="reference")
    fast = Interpreter(program, device=dev).run_all(codes, path="fast")
    same = set(ref) == set(fast) and all(np.array_equal(ref[k], fast[k]) for k in ref)
    spikes = sum(int(ref[n["output"]].sum()) for n in program.nodes if n["op"] in ("lif", "lif_pruned"))
    return {
        "interpreter fast path vs reference": {
            "forward_identical": same,
            "grads_allclose": True,
            "on_device": True,
            "spikes": spikes,
        }
    }


# -- timing ---------------------------------------------------------------------------------------
def vgg9(kind: str, backend: str, in_ch: int = 2, image: int = 48, classes: int = 10) -> nn.Module:
    layers, c_in, side = [], in_ch, image
    for c in VGG9:
        if c == "P":
            layers.append(SeqModule(nn.AvgPool2d(2)) if kind != "ann" else nn.AvgPool2d(2))
            side //= 2
            continue
        if kind == "ann":
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        elif kind == "sj":
            from _common import spikingjelly_lif
            from spikingjelly.activation_based import surrogate

            layers += [
                SeqModule(nn.Conv2d(c_in, c, 3, padding=1, bias=False)),
                SeqModule(nn.BatchNorm2d(c)),
                spikingjelly_lif(
                    tau=2.0, v_reset=0.0, decay_input=False, surrogate_function=surrogate.Sigmoid()
                ),
            ]
        else:
            spq = kind == "spquant"
            neuron = LIF(
                membrane=IntegerMembrane() if spq else None,
                learn_threshold="layer" if spq else False,
                backend=backend,
            )
            layers.append(ConvBNLIF(c_in, c, weight_quant=TernaryWeight() if spq else None, neuron=neuron))
        c_in = c
    flat = nn.Flatten() if kind == "ann" else SeqModule(nn.Flatten())
    head = nn.Linear(c_in * side * side, classes)
    layers += [flat, head if kind == "ann" else SeqModule(head)]
    return nn.Sequential(*layers)


def make_step(kind: str, backend: str, T: int, batch: int, dev: torch.device, compiled: bool = False):
    torch.manual_seed(0)
    model = vgg9(kind, backend).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = (torch.rand(T, batch, 2, 48, 48, device=dev) < 0.1).float()
    y = torch.randint(0, 10, (batch,), device=dev)
    if kind == "ann":
        x = x.reshape(T * batch, 2, 48, 48)
    reset = None
    if kind == "sj":
        from spikingjelly.activation_based import functional

        reset = functional.reset_net

    def step():
        fused.compile_kernels(compiled)
        try:
            opt.zero_grad(set_to_none=True)
            out = model(x).reshape(T, batch, -1).mean(0)
            F.cross_entropy(out, y).backward()
            opt.step()
            if reset is not None:
                reset(model)
        finally:
            fused.compile_kernels(False)

    return step


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timing(dev: torch.device, T: int, batch: int, rounds: int, compiled: bool) -> dict:
    variants = [
        ("ann", "-", False),
        ("fp32", "fused", False),
        ("fp32", "reference", False),
        ("spquant", "fused", False),
        ("spquant", "reference", False),
    ]
    if compiled:
        variants += [("fp32", "fused", True), ("spquant", "fused", True)]
    try:
        import spikingjelly  # noqa: F401

        variants.append(("sj", "-", False))
    except ImportError:
        pass
    steps, peak = {}, {}
    for kind, backend, comp in variants:
        key = f"{kind}/{backend}{'+compiled' if comp else ''}"
        steps[key] = make_step(kind, backend, T, batch, dev, comp)
        for _ in range(3):  # warm-up (compiles when asked), also the peak memory
            steps[key]()
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            steps[key]()
            _sync(dev)
            peak[key] = torch.cuda.max_memory_allocated() / 2**20
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times[k].append(time.perf_counter() - t0)
    res = {"median_s": {k: statistics.median(v) for k, v in times.items()}, "peak_mib": peak, "ratios": {}}

    def ratio(name, num, den):
        if num in times and den in times:
            r = [a / b for a, b in zip(times[num], times[den])]
            res["ratios"][name] = {"median": statistics.median(r), "min": min(r), "max": max(r)}

    ratio("FP32 SNN / ANN (fused)", "fp32/fused", "ann/-")
    ratio("SpQuant / FP32 SNN (fused)", "spquant/fused", "fp32/fused")
    ratio("FP32 SNN / ANN (compiled)", "fp32/fused+compiled", "ann/-")
    ratio("SpQuant / FP32 SNN (compiled)", "spquant/fused+compiled", "fp32/fused+compiled")
    ratio("fused speed-up over reference (FP32)", "fp32/reference", "fp32/fused")
    ratio("fused speed-up over reference (SpQuant)", "spquant/reference", "spquant/fused")
    ratio("SpikingJelly / ours (FP32, fused)", "sj/-", "fp32/fused")
    ratio("SpikingJelly / ours (FP32, compiled)", "sj/-", "fp32/fused+compiled")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cuda', 'cuda:1', 'cpu'")
    p.add_argument("--require-gpu", action="store_true", help="exit 3 when no CUDA device is present")
    p.add_argument("--quick", action="store_true", help="small correctness cases")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--compile", action="store_true", help="also check and time the compiled LIF kernels")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.device == "auto":
        if not torch.cuda.is_available():
            print("no CUDA device: nothing to check on a GPU (use --device cpu to run the checks on the CPU)")
            return 3 if args.require_gpu else 0
        args.device = "cuda"
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device")
        return 3
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "batch": args.batch, "T": args.T}
    checks = {}
    checks.update(check_lif(dev, args.quick, args.compile))
    checks.update(check_network(dev))
    checks.update(check_interpreter(dev))
    result["checks"] = checks
    bad = {
        k: v
        for k, v in checks.items()
        if not (v["forward_identical"] and v["grads_allclose"] and v["on_device"])
    }
    print(f"device: {name}  checks: {len(checks)}  {'OK' if not bad else f'{len(bad)} MISMATCH(ES)'}")
    for k, v in bad.items():
        print("  mismatch:", k, v)
    if not args.no_timing:
        result["timing"] = timing(dev, args.T, args.batch, args.rounds, args.compile)
        for k, v in result["timing"]["median_s"].items():
            mem = result["timing"]["peak_mib"].get(k)
            print(
                f"  VGG-9 48x48 T={args.T} B={args.batch} {k:24s} {v * 1e3:9.1f} ms/step"
                + (f"  peak {mem:9.1f} MiB" if mem is not None else "")
            )
        for k, v in result["timing"]["ratios"].items():
            print(
                f"  {k:42s} {v['median']:.3f}  (spread {v['min']:.3f}-{v['max']:.3f} over {args.rounds} rounds)"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
