"""CPU cost of the element-wise ops a mask can be built and applied with, one [16, 64, 32, 32] step of
the CPU-scale VGG's second layer, one thread, best of 7 rounds of 50 calls (CPU time, ms per call).

Why the fused LIF keeps its masks as floats while it computes and as bool only while it stores
them (float -> bool copy; read back through uint8): on CPUs bool-producing comparisons, bool ->
float conversions and float x bool products are not vectorized.

    python benchmarks/mask_ops.py
"""

from __future__ import annotations

import time

import torch


def per_call_ms(fn, n: int = 50, rounds: int = 7) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e3


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(16, 64, 32, 32)
    keep = torch.rand_like(x) > 0.3
    keep_f, keep_u8 = keep.float(), keep.clone().view(torch.uint8)
    out, out_b = torch.empty_like(x), torch.empty_like(keep)
    copy = per_call_ms(lambda: out.copy_(x))
    rows = {
        "compare, float 0./1. output": per_call_ms(lambda: torch.gt(x, -1.0, out=out)),
        "compare, bool output": per_call_ms(lambda: torch.gt(x, -1.0, out=out_b)),
        "float -> bool copy": per_call_ms(lambda: out_b.copy_(keep_f)),
        "bool -> float copy": per_call_ms(lambda: out.copy_(keep)),
        "uint8 -> float copy": per_call_ms(lambda: out.copy_(keep_u8)),
        "float *= float mask": per_call_ms(lambda: out.copy_(x).mul_(keep_f)) - copy,
        "float *= bool mask": per_call_ms(lambda: out.copy_(x).mul_(keep)) - copy,
    }
    for name, ms in rows.items():
        print(f"{name:30s} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
