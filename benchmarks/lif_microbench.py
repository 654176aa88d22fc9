"""Ad-hoc LIF-only timing used for the standalone numbers in docs/performance.md (not part of run_all).

PYTHONPATH=. python benchmarks/lif_microbench.py <threads>
"""

import sys
import time

import torch

from spquant.neuron import lif_reference
from spquant.neuron.fused import lif_fused
from spquant.quant import IntegerMembrane

torch.set_num_threads(int(sys.argv[1]))
x = torch.randn(4, 32, 64, 32, 32, requires_grad=True)
th = torch.tensor(1.0, requires_grad=True)
q = IntegerMembrane()


def run(f, q):
    s = f(x, th, 0.5, q)
    s.backward(torch.ones_like(s))


def fwd(f, q):
    with torch.no_grad():
        f(x, th, 0.5, q)


for name, fn in [("ref", lif_reference), ("fused", lif_fused)] * 2:
    for qq in [None, q]:
        for mode, g in [("fwd", fwd), ("fb", run)]:
            g(fn, qq)
            t = time.perf_counter()
            for _ in range(3):
                g(fn, qq)
            print(name, qq is not None, mode, round((time.perf_counter() - t) / 3, 4))
