"""Shared pieces of the benchmarks: the CPU-scale VGG, its ANN twin, the SpikingJelly twin, timing.

Not a benchmark itself (``run_all.py`` only runs ``bench_*.py``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from spquant import LIF, ConvBNLIF, IntegerMembrane, SeqModule, TernaryWeight  # noqa: E402

CHANNELS = (32, 64, 128, 128)
POOL_AFTER = (1, 2, 3)  # AvgPool2d(2) after these conv indices: 32x32 -> 4x4
NUM_CLASSES = 10


class FixedChannelGate(nn.Module):
    """STAND-IN for the learned channel gate of the pruning module (which does not exist yet):
    a random but fixed {0,1} tensor [T, B, C, 1, 1] (about 25 % of channels off), same call
    convention as ``ConvBNLIF.gate`` (``gate(x, i)``)."""

    def __init__(self, seed: int, keep: float = 0.75):
        super().__init__()
        self.seed, self.keep, self.cache = seed, keep, {}

    def forward(self, x, i):
        key = (i.shape[0], i.shape[1], i.shape[2])
        if key not in self.cache:
            g = torch.Generator().manual_seed(self.seed)
            self.cache[key] = (torch.rand(*key, 1, 1, generator=g) < self.keep).to(i.dtype)
        return self.cache[key]


def spiking_vgg(
    kind: str = "fp32",
    backend: str = "fused",
    fold_time: bool = True,
    gate: bool = False,
    channels=CHANNELS,
    image: int = 32,
) -> nn.Module:
    """kind 'fp32': FP32 weights + FP32 membrane LIF; 'spquant': ternary weights, ternary membrane,
    learnable (layer) threshold; 'spquant_full': the same plus the real learned channel gate and the
    membrane prior of ``QuantSpec('spquant')`` (default pruning options); optional stand-in gates."""
    from spquant.models import QuantSpec

    layers, c_in = [], 3
    for idx, c in enumerate(channels):
        if kind == "spquant_full":
            block = QuantSpec("spquant", backend=backend, fold_time=fold_time).conv_block(c_in, c, "hidden")
        else:
            if kind == "fp32":
                neuron, wq = LIF(backend=backend), None
            elif kind == "spquant":
                neuron = LIF(membrane=IntegerMembrane(), learn_threshold="layer", backend=backend)
                wq = TernaryWeight()
            else:
                raise ValueError(kind)
            block = ConvBNLIF(
                c_in,
                c,
                weight_quant=wq,
                neuron=neuron,
                fold_time=fold_time,
                gate=FixedChannelGate(idx) if gate else None,
            )
        layers.append(block)
        if idx in POOL_AFTER:
            layers.append(SeqModule(nn.AvgPool2d(2)))
        c_in = c
    side = image // 2 ** len(POOL_AFTER)
    layers += [SeqModule(nn.Flatten()), SeqModule(nn.Linear(c_in * side * side, NUM_CLASSES))]
    return nn.Sequential(*layers)


def relu_vgg(channels=CHANNELS, image: int = 32) -> nn.Module:
    """The same convolutions with ReLU: the ANN lower bound, run on the T*B folded batch."""
    layers, c_in = [], 3
    for idx, c in enumerate(channels):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        if idx in POOL_AFTER:
            layers.append(nn.AvgPool2d(2))
        c_in = c
    side = image // 2 ** len(POOL_AFTER)
    layers += [nn.Flatten(), nn.Linear(c_in * side * side, NUM_CLASSES)]
    return nn.Sequential(*layers)


def spikingjelly_version() -> str | None:
    """The installed SpikingJelly release, or None."""
    try:
        from importlib.metadata import version

        return version("spikingjelly")
    except Exception:  # noqa: BLE001 - not installed (or broken metadata): no SpikingJelly rows
        return None


def spikingjelly_lif(**kwargs):
    """SpikingJelly's multi-step LIFNode with the fastest CPU path of the installed release.

    SpikingJelly 2.0 has no ``backend`` argument (``functional.lif_multi_step`` picks its CPU custom op
    with a hand-written backward by itself); 0.0.0.0.14 needs ``backend='torch'`` (its only CPU
    backend). Both: ``step_mode='m'``."""
    import inspect

    from spikingjelly.activation_based import neuron

    params = inspect.signature(neuron.LIFNode.__init__).parameters
    if "backend" in params:
        kwargs["backend"] = "torch"
    return neuron.LIFNode(step_mode="m", **kwargs)


def spikingjelly_vgg(channels=CHANNELS, image: int = 32):
    """The same convolutions with SpikingJelly's multi-step LIFNode (tau=2 i.e. leak 0.5, no input
    decay, hard reset to 0, Sigmoid surrogate). Returns (None, reason) if SpikingJelly is missing."""
    try:
        from spikingjelly.activation_based import surrogate
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip the row
        return None, f"{type(exc).__name__}: {exc}"
    layers, c_in = [], 3
    for idx, c in enumerate(channels):
        layers += [
            SeqModule(nn.Conv2d(c_in, c, 3, padding=1, bias=False)),
            SeqModule(nn.BatchNorm2d(c)),
            spikingjelly_lif(
                tau=2.0,
                v_reset=0.0,
                decay_input=False,
                detach_reset=False,
                surrogate_function=surrogate.Sigmoid(),
            ),
        ]
        if idx in POOL_AFTER:
            layers.append(SeqModule(nn.AvgPool2d(2)))
        c_in = c
    side = image // 2 ** len(POOL_AFTER)
    layers += [SeqModule(nn.Flatten()), SeqModule(nn.Linear(c_in * side * side, NUM_CLASSES))]
    return nn.Sequential(*layers), None


def make_step(
    model: nn.Module,
    T: int,
    batch: int,
    image: int = 32,
    folded_ann: bool = False,
    sj: bool = False,
    compact: bool = False,
    compiled: bool = False,
    bool_spikes: bool = True,
):
    """A closure doing one training step (forward, CE loss on the mean logits over T (plus the gates'
    loss when the model has learned gates), backward, Adam). ``compiled``: the fused LIF's compiled
    kernels; ``bool_spikes=False`` switches off the default bool storage of saved spikes (ablation)."""
    from contextlib import nullcontext

    from spquant.neuron import fused

    torch.manual_seed(0)
    img = torch.rand(batch, 3, image, image)
    target = torch.randint(0, NUM_CLASSES, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    if folded_ann:
        x = img.unsqueeze(0).expand(T, *img.shape).reshape(T * batch, *img.shape[1:]).contiguous()
    else:
        x = img.unsqueeze(0).expand(T, *img.shape).contiguous()  # direct encoding
    reset = None
    if sj:
        from spikingjelly.activation_based import functional

        reset = functional.reset_net
    from spquant.prune import gate_loss, gate_modules

    has_gates = bool(gate_modules(model))
    ctx = fused.compact_spikes if compact else nullcontext

    def step():
        fused.compile_kernels(compiled)
        fused._builtin_compact["enabled"] = bool_spikes
        try:
            opt.zero_grad(set_to_none=True)
            with ctx():
                out = model(x)
                logits = out.reshape(T, batch, -1).mean(0)
                loss = F.cross_entropy(logits, target)
                if has_gates:
                    loss = loss + gate_loss(model)
            loss.backward()
            opt.step()
            if reset is not None:
                reset(model)
        finally:
            fused.compile_kernels(False)
            fused._builtin_compact["enabled"] = True
        return float(loss.detach())

    return step


def time_interleaved(
    steps: dict, warmup: int = 2, rounds: int = 7, raw: bool = False, clock: str = "wall"
) -> dict:
    """Median seconds per call for each closure, measured round-robin so that machine noise hits
    every variant alike (on a loaded machine single timings vary by +-15 % and more). ``raw=True``:
    the lists of per-round times instead of medians (for per-round ratios, see :func:`ratio_stats`).
    ``clock``: ``'wall'`` (perf_counter), ``'cpu'`` (this process's CPU time: with one thread it
    does not count the time other processes hold the cores, so it is far steadier on a busy machine)
    or ``'both'`` (raw only: ``{'wall': ..., 'cpu': ...}``)."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - t0)
    times = {"wall": wall, "cpu": cpu}.get(clock, {"wall": wall, "cpu": cpu})
    if raw:
        return times
    return {k: statistics.median(v) for k, v in times.items()}


def ratio_stats(times: dict, num: str, den: str) -> dict:
    """Per-round ratios num/den (both timed in the same round, back to back): median, min, max."""
    r = [a / b for a, b in zip(times[num], times[den])]
    return {"median": statistics.median(r), "min": min(r), "max": max(r), "rounds": len(r)}


def load_average() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def row(value, unit: str, goal: str | None = None, met: bool | None = None, note: str = "") -> dict:
    return {"value": value, "unit": unit, "goal": goal, "met": met, "note": note}
