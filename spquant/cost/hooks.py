"""The counting engine: forward hooks that count the operations of every conv / linear /
ConvBNLIF of a model, per layer and time step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from spquant.cost.paper import PaperTerms, paper_convention_terms
from spquant.layers import ConvBNLIF
from spquant.neuron import SpikingNeuron
from spquant.prune import ChannelGate, GateRecorder, LayerRecord, MembranePrior

__all__ = ["LayerCost", "conv_sops"]


def _excluded_modules(model: nn.Module) -> set[int]:
    """ids of modules counted elsewhere: convs inside ConvBNLIF and everything inside a gate."""
    ex: set[int] = set()
    for m in model.modules():
        if isinstance(m, ConvBNLIF):
            ex.add(id(m.conv))
        if isinstance(m, ChannelGate):
            ex.update(id(s) for s in m.modules())
    return ex


def _conv_macs_per_output(conv: nn.Conv2d) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return (conv.in_channels // conv.groups) * k


@torch.no_grad()
def conv_sops(x: torch.Tensor, conv: nn.Conv2d, keep: torch.Tensor | None = None) -> torch.Tensor:
    """SOPs of one conv on one step: for every kept output element, the number of (input channel,
    kernel tap) pairs of its receptive field whose input is nonzero. Padding taps never count.

    ``x``: [N, C_in, H, W]; ``keep``: bool [N, C_out, H', W'] or None (all kept). Returns [N].
    Equivalent to: each nonzero input triggers one accumulate for every kept output it reaches.
    """
    nz = (x != 0).to(torch.float64)
    g = conv.groups
    cin_g = conv.in_channels // g
    ones = torch.ones(g, cin_g, *conv.kernel_size, dtype=torch.float64, device=x.device)
    # count[n, group, oy, ox] = nonzero inputs in the receptive field (per group)
    count = F.conv2d(nz, ones, None, conv.stride, conv.padding, conv.dilation, groups=g)
    cout_g = conv.out_channels // g
    if keep is None:
        return (count.sum(dim=(2, 3)) * cout_g).sum(1)
    kept_per_group = keep.to(torch.float64).reshape(keep.shape[0], g, cout_g, *keep.shape[2:]).sum(2)
    return (kept_per_group * count).sum(dim=(1, 2, 3))


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@dataclass
class LayerCost:
    """Counts of one layer summed over all samples seen; per-step lists are indexed by t."""

    name: str
    kind: str  # 'conv-gated', 'conv', 'linear'
    macs_per_output: int
    spike_input: bool = True  # every input seen was in {0, 1}
    dense_macs: list = field(default_factory=list)
    kept_macs: list = field(default_factory=list)
    sops: list = field(default_factory=list)
    overhead_macs: list = field(default_factory=list)
    neurons: list = field(default_factory=list)  # membrane updates without pruning (LIF layers)
    skipped_updates: list = field(default_factory=list)

    def _add(self, key: str, t: int, value: float) -> None:
        lst = getattr(self, key)
        while len(lst) <= t:
            lst.append(0)
        lst[t] += value

    def total(self, key: str) -> float:
        return float(sum(getattr(self, key)))


class _Counter:
    """Installs the hooks that count operations of every conv / linear / ConvBNLIF of a model."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: dict[str, LayerCost] = {}
        self.samples = 0
        self.T: int | None = None
        self.B: int | None = None
        self.lif_neurons: dict[str, int] = {}  # per sample per step
        self.paper = PaperTerms()  # the authors' convention, summed over gated layers and batches
        self.paper_batch_sizes: set[int] = set()
        self.handles = []
        self._saved_record = []
        for m in model.modules():  # gated layers record their stored membrane codes (zero fraction)
            if isinstance(m, ConvBNLIF) and isinstance(m.neuron, SpikingNeuron):
                self._saved_record.append((m.neuron, m.neuron.record))
                m.neuron.record = True
        excluded = _excluded_modules(model)
        self.handles.append(model.register_forward_pre_hook(self._top_pre))
        for name, m in model.named_modules():
            if id(m) in excluded:
                continue
            if isinstance(m, nn.Conv2d):
                self.handles.append(m.register_forward_hook(self._conv_hook(name)))
            elif isinstance(m, nn.Linear):
                self.handles.append(m.register_forward_hook(self._linear_hook(name)))
            elif isinstance(m, SpikingNeuron):
                self.handles.append(m.register_forward_hook(self._lif_hook(name)))
        self.recorder = GateRecorder(model, self._block)

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        self.recorder.close()
        for neuron, rec in self._saved_record:
            neuron.record = rec
            neuron.last_membrane = None
        self._saved_record = []

    # -- hooks --------------------------------------------------------------------------------
    def _top_pre(self, mod, inputs):
        x = inputs[0]
        self.T, self.B = int(x.shape[0]), int(x.shape[1])
        self.samples += self.B

    def _layer(self, name, kind, per_output) -> LayerCost:
        if name not in self.layers:
            self.layers[name] = LayerCost(name, kind, per_output)
        return self.layers[name]

    def _split(self, n: int) -> tuple[int, int]:
        T = self.T or 1
        if n % T:
            return 1, n
        return T, n // T

    def _conv_hook(self, name):
        def hook(mod, inputs, output):
            x = inputs[0].detach()
            per = _conv_macs_per_output(mod)
            lc = self._layer(name, "conv", per)
            lc.spike_input &= _is_binary(x)
            T, _ = self._split(x.shape[0])
            xs = x.reshape(T, -1, *x.shape[1:])
            outs = output.shape[1] * output.shape[2] * output.shape[3]
            for t in range(T):
                dense = xs.shape[1] * outs * per
                lc._add("dense_macs", t, dense)
                lc._add("kept_macs", t, dense)
                lc._add("sops", t, float(conv_sops(xs[t], mod).sum()))
                lc._add("overhead_macs", t, 0)

        return hook

    def _linear_hook(self, name):
        def hook(mod, inputs, output):
            x = inputs[0].detach()
            lc = self._layer(name, "linear", mod.in_features)
            lc.spike_input &= _is_binary(x)
            x2 = x.reshape(-1, x.shape[-1])
            T, _ = self._split(x2.shape[0])
            xs = x2.reshape(T, -1, x2.shape[-1])
            for t in range(T):
                dense = xs.shape[1] * mod.in_features * mod.out_features
                lc._add("dense_macs", t, dense)
                lc._add("kept_macs", t, dense)
                lc._add("sops", t, float((xs[t] != 0).sum()) * mod.out_features)
                lc._add("overhead_macs", t, 0)

        return hook

    def _lif_hook(self, name):
        def hook(mod, inputs, output):
            T, B = output.shape[:2]
            self.lif_neurons[name] = output[0, 0].numel()

        return hook

    def _block(self, name: str, rec: LayerRecord):
        mod = rec.module
        conv = mod.conv
        x = rec.x
        per = _conv_macs_per_output(conv)
        gated = isinstance(mod.gate, ChannelGate) or isinstance(
            getattr(mod.neuron, "prior", None), MembranePrior
        )
        lc = self._layer(name, "conv-gated" if gated else "conv", per)
        lc.spike_input &= _is_binary(x)
        T, B = rec.keep.shape[:2]
        prior = getattr(mod.neuron, "prior", None)
        gate = mod.gate if isinstance(mod.gate, ChannelGate) else None
        out_hw = tuple(rec.keep.shape[3:])
        in_hw = (int(x.shape[3]), int(x.shape[4]))
        for t in range(T):
            keep = rec.keep[t]
            n_out = keep.numel()
            kept = int(keep.sum())
            lc._add("dense_macs", t, n_out * per)
            lc._add("kept_macs", t, kept * per)
            lc._add("sops", t, float(conv_sops(x[t], conv, keep).sum()))
            overhead = 0
            if gate is not None:
                overhead += B * gate.overhead_macs(in_hw, out_hw)
            if isinstance(prior, MembranePrior) and prior.channel and t > 0:
                overhead += n_out  # mean over space of the stored state: one accumulate per neuron
            lc._add("overhead_macs", t, overhead)
            lc._add("neurons", t, n_out)
            lc._add("skipped_updates", t, n_out - kept)
        if gated:
            self._paper(mod, rec, per, gate)

    def _paper(self, mod, rec: LayerRecord, kvol: int, gate):
        T, B, C, H, W = rec.keep.shape
        active = torch.ones(T, B, C, dtype=torch.bool, device=rec.keep.device)
        if rec.gate is not None:
            active &= rec.gate
        for t in range(1, T):
            pc = rec.prior_channel[t] if t < len(rec.prior_channel) else None
            if pc is not None:
                active[t] &= pc.reshape(B, C)
        mem = getattr(mod.neuron, "last_membrane", None)
        if mem is not None and mem.shape[0] == T:
            zeros = [float((mem[t] == 0).float().mean()) for t in range(T)]
        else:  # FP32 membrane: no stored codes, nothing counted as a zero code
            zeros = [0.0] * T
        x = rec.x
        pred_in = (
            (int(x.shape[2]), int(x.shape[3]), int(x.shape[4])) if gate is not None and gate.learned else None
        )
        self.paper = self.paper + paper_convention_terms(
            B,
            T,
            C,
            H,
            W,
            kvol,
            [float(active[t].float().mean()) for t in range(T)],
            int(active.sum()),
            zeros,
            pred_in,
        )
        self.paper_batch_sizes.add(B)
