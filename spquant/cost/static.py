"""Static cost: parameters, neurons, weight and membrane memory, dense MACs (MB = 10^6 bytes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from spquant.cost.hooks import _Counter
from spquant.neuron import SpikingNeuron
from spquant.prune import ChannelGate
from spquant.quant import packed_bits_per_value

__all__ = ["MB", "StaticCost", "static_cost", "format_static"]

MB = 1_000_000  # bytes per MB: 10^6, as the paper counts (docs/method.md#memory)


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


def _param_bits(
    model: nn.Module, weight_bits: float | None, bn: str, gate_bits: float | None = None
) -> tuple[dict, list]:
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
        rows.append(
            {
                "name": name,
                "params": p.numel(),
                "bits": bits,
                "packed_bits": bits if packed is None else packed,
                "what": what,
            }
        )

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
    lifs = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
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
        {"name": lc.name, "kind": lc.kind, "dense_macs": int(lc.total("dense_macs"))}
        for lc in counter.layers.values()
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
    lines = [
        f"static cost{(' of ' + title) if title else ''}, input {'x'.join(map(str, c.input_shape))} (per sample, per time step)"
    ]
    lines.append("  1 MB = 10^6 bytes")
    lines.append(f"  parameters            {c.params:,}")
    lines.append(
        "  params by bits        " + ", ".join(f"{n:,} @ {b:g} b" for b, n in c.params_by_bits.items())
    )
    lines.append(f"  weight memory         {c.weight_memory_mb:.4f} MB   (BN: {c.bn_mode})")
    lines.append(
        "    by kind             " + ", ".join(f"{k} {v:.4f}" for k, v in c.weight_memory_mb_by_kind.items())
    )
    lines.append(f"  LIF neurons           {c.lif_neurons:,}")
    lines.append(f"  membrane @ 32 bits    {c.membrane_mb_fp32:.4f} MB")
    lines.append(
        f"  membrane @ {c.membrane_bits:g} bits    {c.membrane_mb_paper:.4f} MB   (paper convention)"
    )
    lines.append(f"  membrane @ {c.membrane_packed_bits:g} bits  {c.membrane_mb_packed:.4f} MB   (packed)")
    lines.append(f"  total                 {c.total_mb:.4f} MB   (packed: {c.total_mb_packed:.4f} MB)")
    lines.append(f"  total, all FP32       {c.total_mb_fp32:.4f} MB")
    lines.append(
        f"  memory reduction      {c.memory_reduction:.2f}x   (packed: {c.memory_reduction_packed:.2f}x)"
    )
    lines.append(f"  dense MACs            {c.dense_macs:,}")
    return "\n".join(lines)
