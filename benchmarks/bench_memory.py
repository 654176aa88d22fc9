"""Peak training memory at T=10: reference LIF vs fused LIF vs SpikingJelly's LIFNode (if installed).

Variants: ``*_reference`` (autograd through the readable LIF loop), ``*_fused`` (the default: fused
LIF, spikes saved as bool by the blocks that consume them), ``*_fused-floatspikes`` (the fused LIF
with the bool storage of saved spikes switched off: what that storage buys), ``spikingjelly``.

Method (explained in docs/performance.md): every variant runs in its own fresh subprocess with
``MALLOC_MMAP_THRESHOLD_=65536``, so every tensor buffer above 64 KiB is its own mmap and the
process RSS follows the live tensor memory (glibc's heap would otherwise keep freed pages and hide
the difference; the fixed threshold also switches off glibc's dynamic threshold). The child builds the
model and data, does one warm-up training step (Adam creates its state), then resets the kernel's
peak-RSS counter (``echo 5 > /proc/self/clear_refs``), reads ``VmRSS``, runs one training step
(forward + backward + Adam) and reads ``VmHWM``: peak = VmHWM - VmRSS before the step, i.e. the extra
memory the step needs at its peak (activations saved for backward + gradients + temporaries).

A second, deterministic number: the bytes the autograd graph saves for backward (summed through
``torch.autograd.graph.saved_tensors_hooks`` during the forward pass).

    python benchmarks/bench_memory.py [--T 10] [--batch 32]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = (
    "fp32_reference",
    "fp32_fused",
    "fp32_fused-floatspikes",
    "spquant_reference",
    "spquant_fused",
    "spquant_fused-floatspikes",
    "spikingjelly",
)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) * 1024


def child(variant: str, T: int, batch: int) -> dict:
    import torch
    from _common import make_step, spiking_vgg, spikingjelly_vgg

    torch.set_num_threads(1)
    if variant == "spikingjelly":
        model, reason = spikingjelly_vgg()
        if model is None:
            return {"skipped": reason}
        step = make_step(model, T, batch, sj=True)
    else:
        kind, backend = variant.split("_")
        backend, _, ablation = backend.partition("-")
        step = make_step(spiking_vgg(kind, backend), T, batch, bool_spikes=ablation != "floatspikes")
    step()  # warm-up: Adam state, first-touch allocations
    saved = []

    # count what autograd really stores: the outer hook sees everything saved outside the blocks'
    # own bool packing; the wrapped packing function counts what the blocks store (bool spikes)
    import spquant.neuron.fused as fused

    original = fused._pack

    def counting_pack(t):
        p = original(t)
        saved.append(p[1].numel() if isinstance(p, tuple) else p.numel() * p.element_size())
        return p

    def outer_pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    fused._pack = counting_pack
    try:
        with torch.autograd.graph.saved_tensors_hooks(outer_pack, lambda t: t):
            step()
    finally:
        fused._pack = original
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    before = _status("VmRSS")
    step()
    peak = _status("VmHWM") - before
    return {"peak_bytes": peak, "saved_bytes": sum(saved), "hwm_reset": hwm_reset}


def run_child(variant: str, T: int, batch: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env.pop("LD_PRELOAD", None)  # the glibc method above needs glibc malloc
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--T", str(T), "--batch", str(batch)],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(T: int = 10, batch: int = 32) -> dict:
    from _common import row

    res = {v: run_child(v, T, batch) for v in VARIANTS}
    rows = {}
    mib = 1024 * 1024
    for v, r in res.items():
        if "peak_bytes" in r:
            rows[f"peak step memory {v} [MiB]"] = row(round(r["peak_bytes"] / mib, 1), "MiB")
            rows[f"saved for backward {v} [MiB]"] = row(round(r["saved_bytes"] / mib, 1), "MiB")
        else:
            rows[f"peak step memory {v} [MiB]"] = row(
                None, "MiB", note=f"skipped: {r.get('skipped') or r.get('error')}"
            )
    for kind, suffix in itertools.product(("fp32", "spquant"), ("", "-floatspikes")):
        ref, fused = res[f"{kind}_reference"], res[f"{kind}_fused{suffix}"]
        if "peak_bytes" in ref and "peak_bytes" in fused:
            ratio = fused["peak_bytes"] / ref["peak_bytes"]
            rows[f"peak memory fused{suffix}/reference ({kind}, T={T})"] = row(
                round(ratio, 3), "ratio", "<= 0.6", ratio <= 0.6
            )
            ratio = fused["saved_bytes"] / ref["saved_bytes"]
            rows[f"saved-for-backward fused{suffix}/reference ({kind})"] = row(round(ratio, 3), "ratio")
    sj = res["spikingjelly"]
    if "peak_bytes" in sj:
        for kind, suffix in itertools.product(("fp32", "spquant"), ("", "-floatspikes")):
            ours = res[f"{kind}_fused{suffix}"]
            if "peak_bytes" not in ours:
                continue
            ratio = ours["saved_bytes"] / sj["saved_bytes"]
            rows[f"saved memory ours {kind} fused{suffix} / SpikingJelly"] = row(
                round(ratio, 3), "ratio", "<= 0.5", ratio <= 0.5
            )
            ratio = ours["peak_bytes"] / sj["peak_bytes"]
            rows[f"peak step memory ours {kind} fused{suffix} / SpikingJelly"] = row(round(ratio, 3), "ratio")
    else:
        rows["saved memory ours / SpikingJelly"] = row(
            None, "ratio", "<= 0.5", None, f"skipped: {sj.get('skipped') or sj.get('error')}"
        )
    from _common import spikingjelly_version

    rows["memory config"] = row(
        f"T={T} batch={batch} threads=1 method=VmHWM-VmRSS, MALLOC_MMAP_THRESHOLD_=65536, "
        f"spikingjelly={spikingjelly_version()}",
        "",
    )
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--child")
    args = p.parse_args()
    if args.child:
        sys.path.insert(0, HERE)
        print(json.dumps(child(args.child, args.T, args.batch)))
    else:
        for k, v in main(args.T, args.batch).items():
            print(
                f"{k:55s} {v['value']!s:>10} {v['goal'] or '':>8} {'' if v['met'] is None else ('met' if v['met'] else 'MISSED')} {v['note']}"
            )
