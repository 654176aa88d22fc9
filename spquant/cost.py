"""Cost accounting (SPEC §5.5, §10): memory, dense MACs, and measured kept MACs / SOPs / energy.

* :func:`static_cost` — parameters, LIF neurons per sample per step, weight memory (each layer at
  its quantizer's actual bits), membrane memory at 32 bits, the paper's 2-bit convention and our
  packed 1.6-bit encoding, totals, dense MACs per sample per step. MB = 10^6 bytes.
* :func:`measure_cost` — runs a model in eval mode on data with recording hooks and counts, per
  layer and time step: dense MACs, kept MACs (active output channels and positions only,
  ``C_in*k^2`` per output element), SOPs (MACs triggered by nonzero inputs), skipped membrane
  updates, the gate predictor's (and channel prior's) overhead, FLOPs reduction
  ``dense / (kept + overhead)`` and energy **estimates**.

Definitions and energy figures (with sources) are in ``docs/pruning_and_cost.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from spquant.layers import ConvBNLIF
from spquant.neuron import LIF
from spquant.prune import ChannelGate, GateRecorder, LayerRecord, MembranePrior
from spquant.quant import packed_bits_per_value

__all__ = [
    "MB",
    "ENERGY_PRESETS",
    "StaticCost",
    "MeasuredCost",
    "LayerCost",
    "static_cost",
    "measure_cost",
    "conv_sops",
    "format_static",
    "format_measured",
    "measured_cost_from_run",
    "cost_report",
]

MB = 1_000_000  # bytes per MB: 10^6, as the paper counts (SPEC §10)

# Energy per operation in picojoules, 45 nm CMOS, from M. Horowitz, "Computing's energy problem
# (and what we can do about it)", ISSCC 2014 (Fig. 1.1.9): 32-bit float mult 3.7 pJ + add 0.9 pJ;
# 32-bit int mult 3.1 pJ + add 0.1 pJ; 8-bit int mult 0.2 pJ + add 0.03 pJ. The SNN literature's
# "MAC 4.6 pJ / AC 0.9 pJ" is the fp32 row. These are ESTIMATES of arithmetic energy only (no memory
# access, no control), for comparing operation counts, not measurements of any chip.
ENERGY_PRESETS: dict[str, dict[str, Any]] = {
    "45nm-fp32": {"mac_pj": 4.6, "ac_pj": 0.9, "source": "Horowitz ISSCC 2014, 45 nm: fp32 mult 3.7 + add 0.9 pJ"},
    "45nm-int32": {"mac_pj": 3.2, "ac_pj": 0.1, "source": "Horowitz ISSCC 2014, 45 nm: int32 mult 3.1 + add 0.1 pJ"},
    "45nm-int8": {"mac_pj": 0.23, "ac_pj": 0.03, "source": "Horowitz ISSCC 2014, 45 nm: int8 mult 0.2 + add 0.03 pJ"},
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# counting engine
# --------------------------------------------------------------------------------------------
class _Counter:
    """Installs the hooks that count operations of every conv / linear / ConvBNLIF of a model."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: dict[str, LayerCost] = {}
        self.samples = 0
        self.T: int | None = None
        self.B: int | None = None
        self.lif_neurons: dict[str, int] = {}  # per sample per step
        self.handles = []
        excluded = _excluded_modules(model)
        self.handles.append(model.register_forward_pre_hook(self._top_pre))
        for name, m in model.named_modules():
            if id(m) in excluded:
                continue
            if isinstance(m, nn.Conv2d):
                self.handles.append(m.register_forward_hook(self._conv_hook(name)))
            elif isinstance(m, nn.Linear):
                self.handles.append(m.register_forward_hook(self._linear_hook(name)))
            elif isinstance(m, LIF):
                self.handles.append(m.register_forward_hook(self._lif_hook(name)))
        self.recorder = GateRecorder(model, self._block)

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        self.recorder.close()

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
        gated = isinstance(mod.gate, ChannelGate) or isinstance(getattr(mod.neuron, "prior", None), MembranePrior)
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


# --------------------------------------------------------------------------------------------
# static cost
# --------------------------------------------------------------------------------------------
@dataclass
class StaticCost:
    """Static figures of a model for one sample and one time step. MB = 10^6 bytes."""

    input_shape: tuple
    params: int
    params_by_bits: dict
    weight_memory_bits: float
    weight_memory_mb: float
    weight_memory_mb_packed: float  # weight codes packed base-levels (ternary 1.6 bits), as in the .spq file
    lif_neurons: int
    membrane_bits: float  # bits actually stored per neuron in the paper convention (32 for FP32)
    membrane_mb_fp32: float
    membrane_mb_paper: float  # plain encoding: ceil(log2(levels)) bits (2 for ternary)
    membrane_mb_packed: float  # base-levels packing (1.6 bits for ternary)
    membrane_packed_bits: float
    total_mb: float  # weights + membrane (paper convention)
    total_mb_packed: float  # packed weights + packed membrane (the .spq storage)
    total_mb_fp32: float  # FP32 baseline: counted non-gate params at 32 bits + membrane at 32 bits
    memory_reduction: float  # total_mb_fp32 / total_mb
    memory_reduction_packed: float
    dense_macs: int  # per sample per step
    bn_mode: str
    weight_memory_mb_by_kind: dict = field(default_factory=dict)  # weight / bias / bn / gate / other
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["params_by_bits"] = {str(k): v for k, v in self.params_by_bits.items()}
        d["mb_definition"] = "1 MB = 10^6 bytes"
        return d


def _gate_param_bits(model: nn.Module, gate_bits: float | None) -> dict[int, float]:
    """id(param) -> bits for gate predictor parameters: weights at their quantizer's bits (or
    ``gate_bits``), biases at 32; ``gate_bits == 0`` leaves every gate parameter out."""
    out: dict[int, float] = {}
    for g in model.modules():
        if not isinstance(g, ChannelGate):
            continue
        for conv, quant in ((g.predictor, g.predictor_quant), (g.spatial_conv, g.spatial_quant)):
            if conv is None:
                continue
            wbits = float(getattr(quant, "bits", 32)) if gate_bits is None else float(gate_bits)
            out[id(conv.weight)] = wbits
            if conv.bias is not None:
                out[id(conv.bias)] = 0.0 if gate_bits == 0 else 32.0
        for p in g.parameters():
            out.setdefault(id(p), 0.0 if gate_bits == 0 else 32.0)
    return out


def _param_bits(model: nn.Module, weight_bits: float | None, bn: str, gate_bits: float | None = None) -> tuple[dict, list]:
    """{bits: params} and a per-tensor list. Conv/linear weights at their quantizer's bits (or
    ``weight_bits``); biases, gates, thresholds at 32; BN per ``bn``."""
    by_bits: dict[float, int] = {}
    rows = []
    seen: set[int] = set()

    def add(name, p, bits, what, packed=None):
        if id(p) in seen:
            return
        seen.add(id(p))
        if bits == 0:
            return
        by_bits[bits] = by_bits.get(bits, 0) + p.numel()
        rows.append({"name": name, "params": p.numel(), "bits": bits, "packed_bits": bits if packed is None else packed, "what": what})

    gate_params = _gate_param_bits(model, gate_bits)
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m.weight) not in gate_params:
            wq = getattr(m, "weight_quant", None)
            bits = float(weight_bits) if weight_bits is not None else float(getattr(wq, "bits", 32))
            packed = None
            if weight_bits is None and bits < 32 and hasattr(wq, "max_code"):
                # symmetric codes -n..n packed base-(2n+1) into bytes, as the .spq file stores them
                packed = min(bits, packed_bits_per_value(2 * wq.max_code + 1))
            add(f"{mname}.weight", m.weight, bits, "weight", packed)
            if m.bias is not None:
                add(f"{mname}.bias", m.bias, 32.0, "bias")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            bits = {"count": 32.0, "ignore": 0}[bn]
            for pn, p in m.named_parameters(recurse=False):
                add(f"{mname}.{pn}", p, bits, "bn")
    for pname, p in model.named_parameters():
        if id(p) in gate_params:
            add(pname, p, gate_params[id(p)], "gate")
        else:
            add(pname, p, 32.0, "other")
    return by_bits, rows


@torch.no_grad()
def static_cost(
    model: nn.Module,
    input_shape=(3, 48, 48),
    weight_bits: float | None = None,
    membrane_bits: float | None = None,
    bn: str = "count",
    gate_bits: float | None = None,
) -> StaticCost:
    """Static cost of ``model`` for one sample and one time step.

    * ``params``: every trainable parameter (gates and thresholds included).
    * weight memory: conv/linear weights at their quantizer's bits (IdentityWeight 32, TernaryWeight
      2, SAWBWeight b) unless ``weight_bits`` overrides all of them; biases, gate predictors and
      thresholds at 32 bits; BatchNorm affine parameters at 32 bits (``bn='count'``, they become
      the per-channel fixed-point multiplier and bias after folding) or not at all
      (``bn='ignore'``). Running statistics are buffers and never counted. Gate
      predictor weights (spquant mode) at their quantizer's bits (``predictor_bits`` option, 8 by
      default) or ``gate_bits``; their biases at 32; ``gate_bits=0`` leaves the gates out.
    * membrane memory: LIF neurons per sample per step x bits: 32 (FP32), the paper's plain
      encoding (``ceil(log2(levels))``, 2 for ternary) and packed (``IntegerMembrane.packed_bits``,
      1.6 for ternary). ``membrane_bits`` overrides the paper-convention bits (e.g. 1.58).
    * dense MACs per sample per step: conv ``C_out*H'*W'*C_in*k^2/groups``, linear ``in*out``
      (gate predictors excluded; they are overhead, see :func:`measure_cost`).
    """
    if bn not in ("count", "ignore"):
        raise ValueError(f"bn must be 'count' or 'ignore', got {bn!r}")
    was_training = model.training
    model.eval()
    counter = _Counter(model)
    try:
        p = next(iter(model.parameters()), None)
        x = torch.zeros(1, 1, *input_shape, device=p.device if p is not None else None)
        model(x)
    finally:
        counter.close()
        model.train(was_training)
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    neurons = sum(counter.lif_neurons.values())
    # membrane bits: from the first LIF with an integer membrane (all layers share the spec)
    mem = next((m.membrane for m in lifs if m.membrane is not None), None)
    if mem is None:
        plain, packed = 32.0, 32.0
    else:
        plain, packed = float(mem.plain_bits), float(mem.packed_bits)
    if membrane_bits is not None:
        plain = float(membrane_bits)
        if packed > plain:
            packed = plain
    by_bits, rows = _param_bits(model, weight_bits, bn, gate_bits)
    by_kind: dict[str, float] = {}
    for r in rows:
        by_kind[r["what"]] = by_kind.get(r["what"], 0.0) + r["params"] * r["bits"] / 8 / MB
    params = sum(p.numel() for p in model.parameters())
    wbits = sum(b * n for b, n in by_bits.items())
    wmb = wbits / 8 / MB
    wmb_packed = sum(r["params"] * r["packed_bits"] for r in rows) / 8 / MB
    m32 = neurons * 32 / 8 / MB
    mpaper = neurons * plain / 8 / MB
    mpacked = neurons * packed / 8 / MB
    # the FP32 baseline of the same architecture: no gate predictors, every other counted parameter
    # at 32 bits, membrane at 32 bits
    counted_nogate = sum(r["params"] for r in rows if r["what"] != "gate")
    total32 = counted_nogate * 32 / 8 / MB + m32
    dense = sum(lc.total("dense_macs") for lc in counter.layers.values())
    layers = [
        {"name": lc.name, "kind": lc.kind, "dense_macs": int(lc.total("dense_macs"))} for lc in counter.layers.values()
    ]
    return StaticCost(
        input_shape=tuple(input_shape),
        params=int(params),
        params_by_bits={k: int(v) for k, v in sorted(by_bits.items())},
        weight_memory_bits=float(wbits),
        weight_memory_mb=wmb,
        weight_memory_mb_packed=wmb_packed,
        lif_neurons=int(neurons),
        membrane_bits=plain,
        membrane_mb_fp32=m32,
        membrane_mb_paper=mpaper,
        membrane_mb_packed=mpacked,
        membrane_packed_bits=packed,
        total_mb=wmb + mpaper,
        total_mb_packed=wmb_packed + mpacked,
        total_mb_fp32=total32,
        memory_reduction=total32 / (wmb + mpaper),
        memory_reduction_packed=total32 / (wmb_packed + mpacked),
        dense_macs=int(dense),
        bn_mode=bn,
        weight_memory_mb_by_kind=by_kind,
        layers=layers,
    )


def format_static(c: StaticCost, title: str = "") -> str:
    lines = [f"static cost{(' of ' + title) if title else ''}, input {'x'.join(map(str, c.input_shape))} (per sample, per time step)"]
    lines.append("  1 MB = 10^6 bytes")
    lines.append(f"  parameters            {c.params:,}")
    lines.append("  params by bits        " + ", ".join(f"{n:,} @ {b:g} b" for b, n in c.params_by_bits.items()))
    lines.append(f"  weight memory         {c.weight_memory_mb:.4f} MB   (BN: {c.bn_mode})")
    lines.append("    by kind             " + ", ".join(f"{k} {v:.4f}" for k, v in c.weight_memory_mb_by_kind.items()))
    lines.append(f"  LIF neurons           {c.lif_neurons:,}")
    lines.append(f"  membrane @ 32 bits    {c.membrane_mb_fp32:.4f} MB")
    lines.append(f"  membrane @ {c.membrane_bits:g} bits    {c.membrane_mb_paper:.4f} MB   (paper convention)")
    lines.append(f"  membrane @ {c.membrane_packed_bits:g} bits  {c.membrane_mb_packed:.4f} MB   (packed)")
    lines.append(f"  total                 {c.total_mb:.4f} MB   (packed: {c.total_mb_packed:.4f} MB)")
    lines.append(f"  total, all FP32       {c.total_mb_fp32:.4f} MB")
    lines.append(f"  memory reduction      {c.memory_reduction:.2f}x   (packed: {c.memory_reduction_packed:.2f}x)")
    lines.append(f"  dense MACs            {c.dense_macs:,}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# measured cost
# --------------------------------------------------------------------------------------------
@dataclass
class MeasuredCost:
    """Measured operation counts, **per sample** (summed over its T steps) unless named per_step.

    ``flops_reduction = dense_macs / (kept_macs + overhead_macs)`` (SPEC §5.5).
    ``effective_reduction = dense_macs / (effective_ops + overhead_macs)`` where effective ops are
    SOPs for layers whose inputs are spikes and kept MACs for the others.
    Energies are ESTIMATES (see :data:`ENERGY_PRESETS`).
    """

    samples: int
    T: int
    dense_macs: float
    kept_macs: float
    sops: float
    effective_ops: float
    overhead_macs: float
    membrane_updates: float
    skipped_updates: float
    flops_reduction: float
    effective_reduction: float
    energy_pj: dict
    dense_energy_pj: dict
    layers: list

    def to_dict(self) -> dict:
        d = asdict(self)
        d["note"] = "counts per sample (all T steps); energies are estimates, arithmetic only (Horowitz ISSCC 2014, 45 nm)"
        return d


def _batches(batches, max_batches):
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def measure_cost(model: nn.Module, batches: Iterable, max_batches: int | None = None, device=None) -> MeasuredCost:
    """Run ``model`` in eval mode on ``batches`` (tensors [T, B, ...] or (x, y, ...) tuples) and
    count operations per layer and time step.

    Per layer and step:

    * dense MACs: every output element x ``C_in*k^2/groups`` (linear: ``in``);
    * kept MACs: only output elements whose neuron is updated (learned gate AND prior), same
      per-element cost; layers without gate/prior (first conv of ResNet, the second conv and the
      shortcut of residual blocks, linear layers) count dense;
    * SOPs: for each kept output element, the number of nonzero inputs in its receptive field
      (= each nonzero input triggers one accumulate per kept output it reaches; padding never);
    * overhead: gate predictor ops (:meth:`ChannelGate.overhead_macs`) + one accumulate per
      neuron for the channel prior's mean at t > 0;
    * membrane updates / skipped updates of gated LIF layers.

    Returns per-sample totals; ``layers`` holds the per-layer, per-step lists (summed over samples).
    """
    was_training = model.training
    model.eval()
    counter = _Counter(model)
    try:
        for x in _batches(batches, max_batches):
            if device is not None:
                x = x.to(device)
            model(x)
    finally:
        counter.close()
        model.train(was_training)
    n = max(1, counter.samples)
    layers = list(counter.layers.values())
    tot = lambda key: sum(lc.total(key) for lc in layers) / n  # noqa: E731
    dense, kept, sops, over = tot("dense_macs"), tot("kept_macs"), tot("sops"), tot("overhead_macs")
    eff_spike = sum(lc.total("sops") for lc in layers if lc.spike_input) / n
    eff_mac = sum(lc.total("kept_macs") for lc in layers if not lc.spike_input) / n
    lif_updates = sum(counter.lif_neurons.values()) * (counter.T or 1)
    skipped = tot("skipped_updates")
    energy, dense_energy = {}, {}
    for preset, e in ENERGY_PRESETS.items():
        energy[preset] = eff_spike * e["ac_pj"] + (eff_mac + over) * e["mac_pj"]
        dense_energy[preset] = dense * e["mac_pj"]
    return MeasuredCost(
        samples=counter.samples,
        T=counter.T or 0,
        dense_macs=dense,
        kept_macs=kept,
        sops=sops,
        effective_ops=eff_spike + eff_mac,
        overhead_macs=over,
        membrane_updates=lif_updates - skipped,
        skipped_updates=skipped,
        flops_reduction=dense / (kept + over) if kept + over else float("inf"),
        effective_reduction=dense / (eff_spike + eff_mac + over) if eff_spike + eff_mac + over else float("inf"),
        energy_pj=energy,
        dense_energy_pj=dense_energy,
        layers=[asdict(lc) for lc in layers],
    )


def format_measured(c: MeasuredCost, title: str = "") -> str:
    lines = [f"measured cost{(' of ' + title) if title else ''}: {c.samples} samples, T={c.T} (per sample, all steps)"]
    lines.append(f"  dense MACs            {c.dense_macs:,.0f}")
    lines.append(f"  kept MACs             {c.kept_macs:,.0f}")
    lines.append(f"  predictor overhead    {c.overhead_macs:,.0f}")
    lines.append(f"  SOPs                  {c.sops:,.0f}")
    lines.append(f"  membrane updates      {c.membrane_updates:,.0f} (skipped {c.skipped_updates:,.0f})")
    lines.append(f"  FLOPs reduction       {c.flops_reduction:.2f}x   = dense / (kept + overhead)")
    lines.append(f"  effective reduction   {c.effective_reduction:.2f}x   = dense / (SOPs or kept MACs + overhead)")
    lines.append("  energy ESTIMATES (arithmetic only; Horowitz ISSCC 2014, 45 nm):")
    for k, v in c.energy_pj.items():
        lines.append(f"    {k:12s} {v / 1e6:10.3f} uJ   (dense MAC network: {c.dense_energy_pj[k] / 1e6:.3f} uJ)")
    return "\n".join(lines)


def measured_cost_from_run(
    run_dir,
    data="test",
    max_batches: int | None = 10,
    batch_size: int = 100,
    checkpoint: bool = False,
    device: str = "cpu",
) -> MeasuredCost:
    """Measured cost of a trained run folder (written by :mod:`spquant.train`).

    The model comes from ``spquant.train.load_run(run_dir)`` (``model.safetensors``, or the newest
    checkpoint with ``checkpoint=True``). ``data`` is a split name of the run's own data config
    (``'test'`` or ``'train'``) or an iterable of ready batches ([T, B, ...] tensors or (x, y)
    pairs). With a split, the first ``max_batches`` batches of ``batch_size`` samples are used
    (``max_batches=None``: the whole split).
    """
    try:
        from spquant.train import load_run
    except ImportError as exc:  # pragma: no cover - spquant.train is part of the package now
        raise RuntimeError(
            "measured cost from a run folder needs spquant.train (checkpoint loader); use "
            "spquant.cost.measure_cost(model, batches) on a loaded model instead"
        ) from exc
    from spquant.train.checkpoint import CheckpointError

    try:
        run = load_run(run_dir, checkpoint=checkpoint, device=device)
    except (CheckpointError, OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"cannot load run {run_dir}: {exc}") from exc
    model, config = run.model, run.config
    if data is None:
        data = "test"
    if isinstance(data, str):
        if data not in ("test", "train"):
            raise RuntimeError(f"data must be 'test' or 'train' (a split of the run's data config), got {data!r}")
        from spquant.train.data import load_split

        split = load_split(config, data)
        T = config.model.T
        n = len(split) if max_batches is None else min(len(split), batch_size * max_batches)
        batches = [split.batch(torch.arange(s, min(s + batch_size, n)), T)[0] for s in range(0, n, batch_size)]
        return measure_cost(model, batches, device=device)
    return measure_cost(model, data, max_batches=max_batches, device=device)


def cost_report(model: nn.Module, input_shape, batches: Iterable | None = None, max_batches: int | None = None) -> dict:
    """Flat summary for training reports: memory (MB = 10^6 bytes) and, with data, measured FLOPs
    reduction. Keys: ``params``, ``lif_neurons``, ``memory_mb``, ``memory_mb_packed``,
    ``memory_mb_fp32``, ``memory_reduction``, ``memory_reduction_packed``, ``dense_macs_per_step``
    and, when ``batches`` are given, ``flops_reduction``, ``effective_reduction``,
    ``kept_macs_per_sample``, ``sops_per_sample``, ``overhead_macs_per_sample``,
    ``skipped_update_fraction``, ``energy_uj_45nm_fp32`` / ``energy_uj_45nm_int8`` (estimates)."""
    st = static_cost(model, input_shape)
    out: dict[str, Any] = {
        "params": st.params,
        "lif_neurons": st.lif_neurons,
        "memory_mb": st.total_mb,
        "memory_mb_packed": st.total_mb_packed,
        "memory_mb_fp32": st.total_mb_fp32,
        "memory_reduction": st.memory_reduction,
        "memory_reduction_packed": st.memory_reduction_packed,
        "dense_macs_per_step": st.dense_macs,
    }
    if batches is not None:
        m = measure_cost(model, batches, max_batches=max_batches)
        updates = m.membrane_updates + m.skipped_updates
        out.update(
            flops_reduction=m.flops_reduction,
            effective_reduction=m.effective_reduction,
            kept_macs_per_sample=m.kept_macs,
            sops_per_sample=m.sops,
            overhead_macs_per_sample=m.overhead_macs,
            skipped_update_fraction=m.skipped_updates / updates if updates else 0.0,
            energy_uj_45nm_fp32=m.energy_pj["45nm-fp32"] / 1e6,
            energy_uj_45nm_int8=m.energy_pj["45nm-int8"] / 1e6,
        )
    return out
