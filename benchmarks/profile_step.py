"""Where the time of a training step goes: ``torch.profiler`` over the CPU-scale VGG of ``_common.py``.

For each variant (``fp32``, ``spquant``, ``spquant_full`` = SpQuant + learned gate + membrane prior)
it profiles ``--steps`` training steps after two warm-up steps (round-robin over the variants, so
load drift hits all alike), one torch thread, and prints the profiled CPU time per step split into:
convolutions (forward, backward), BatchNorm (forward, backward), pooling, the fused LIF (forward,
backward; the prior's masks are inside the forward), the gate module (predictor, target, loss:
forward only, its backward is tiny), the optimizer, the rest.
Profiler overhead inflates every row alike; compare rows and variants of one run, not seconds.

    python benchmarks/profile_step.py [--variants spquant spquant_full] [--steps 4] [--batch 16]
"""

from __future__ import annotations

import argparse
import functools

import torch
from _common import load_average, make_step, spiking_vgg
from torch.profiler import ProfilerActivity, profile, record_function

# profiler keys (self CPU time) -> row; the LIF and gate rows use their total time instead
ROWS = {
    "aten::mkldnn_convolution": "conv forward",
    "aten::convolution_backward": "conv backward",
    "aten::native_batch_norm": "BatchNorm forward",
    "aten::native_batch_norm_backward": "BatchNorm backward",
    "aten::avg_pool2d": "pooling",
    "aten::avg_pool2d_backward": "pooling",
}
TOTAL_ROWS = {
    "_FusedLIF": "LIF forward (incl. prior)",
    "_FusedLIFBackward": "LIF backward",
    "GATE.forward": "gate module forward",
    "Optimizer.step#Adam.step": "optimizer",
}


def _label_gate_forward() -> None:
    from spquant.prune.gate import ChannelGate

    if getattr(ChannelGate.forward, "_labelled", False):
        return
    fwd = ChannelGate.forward

    @functools.wraps(fwd)
    def labelled(self, *args, **kwargs):
        with record_function("GATE.forward"):
            return fwd(self, *args, **kwargs)

    labelled._labelled = True
    ChannelGate.forward = labelled


def _rows(events) -> tuple[float, dict]:
    total = sum(e.self_cpu_time_total for e in events)
    rows: dict[str, float] = {}
    covered = 0.0
    for e in events:
        if e.key in ROWS:
            rows[ROWS[e.key]] = rows.get(ROWS[e.key], 0.0) + e.self_cpu_time_total
            covered += e.self_cpu_time_total
        elif e.key in TOTAL_ROWS:
            rows[TOTAL_ROWS[e.key]] = rows.get(TOTAL_ROWS[e.key], 0.0) + e.cpu_time_total
            covered += e.cpu_time_total
    rows["rest"] = total - covered
    return total, rows


def profile_variants(kinds, steps: int, batch: int, T: int) -> dict:
    """Round-robin: one profiled step of every variant, ``steps`` times (load drift hits all alike)."""
    fns = {k: make_step(spiking_vgg(k, "fused"), T, batch) for k in kinds}
    for fn in fns.values():
        fn()
        fn()
    res = {k: {"total": 0.0, "rows": {}} for k in kinds}
    for _ in range(steps):
        for k, fn in fns.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            total, rows = _rows(prof.key_averages())
            res[k]["total"] += total / steps / 1e3
            for n, v in rows.items():
                res[k]["rows"][n] = res[k]["rows"].get(n, 0.0) + v / steps / 1e3
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["fp32", "spquant", "spquant_full"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    _label_gate_forward()
    print(f"load before {load_average()}")
    res = profile_variants(args.variants, args.steps, args.batch, args.T)
    names = list(dict.fromkeys(n for r in res.values() for n in r["rows"]))
    print(f"{'profiled CPU ms per step':28s}" + "".join(f"{k:>16s}" for k in res))
    for n in names:
        print(f"{n:28s}" + "".join(f"{r['rows'].get(n, 0.0):16.1f}" for r in res.values()))
    print(f"{'total':28s}" + "".join(f"{r['total']:16.1f}" for r in res.values()))
    print(f"load after {load_average()}")


if __name__ == "__main__":
    main()
