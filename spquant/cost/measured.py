"""Measured cost: kept MACs, SOPs, skipped membrane updates, gate overhead, FLOPs reduction and
energy estimates, counted on data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from spquant.cost.hooks import _Counter
from spquant.cost.static import static_cost

__all__ = ["ENERGY_PRESETS", "MeasuredCost", "measure_cost", "format_measured", "cost_report"]


# Energy per operation in picojoules, 45 nm CMOS, from M. Horowitz, "Computing's energy problem
# (and what we can do about it)", ISSCC 2014 (Fig. 1.1.9): 32-bit float mult 3.7 pJ + add 0.9 pJ;
# 32-bit int mult 3.1 pJ + add 0.1 pJ; 8-bit int mult 0.2 pJ + add 0.03 pJ. The SNN literature's
# "MAC 4.6 pJ / AC 0.9 pJ" is the fp32 row. These are ESTIMATES of arithmetic energy only (no memory
# access, no control), for comparing operation counts, not measurements of any chip.
ENERGY_PRESETS: dict[str, dict[str, Any]] = {
    "45nm-fp32": {
        "mac_pj": 4.6,
        "ac_pj": 0.9,
        "source": "Horowitz ISSCC 2014, 45 nm: fp32 mult 3.7 + add 0.9 pJ",
    },
    "45nm-int32": {
        "mac_pj": 3.2,
        "ac_pj": 0.1,
        "source": "Horowitz ISSCC 2014, 45 nm: int32 mult 3.1 + add 0.1 pJ",
    },
    "45nm-int8": {
        "mac_pj": 0.23,
        "ac_pj": 0.03,
        "source": "Horowitz ISSCC 2014, 45 nm: int8 mult 0.2 + add 0.03 pJ",
    },
}


@dataclass
class MeasuredCost:
    """Measured operation counts, **per sample** (summed over its T steps) unless named per_step.

    ``flops_reduction = dense_macs / (kept_macs + overhead_macs)`` (docs/method.md#accountings).
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
    # the three accountings side by side (docs/pruning_and_cost.md, "Three accountings")
    dense_mac_reduction: float = 1.0
    effective_op_reduction: float = 1.0
    paper_convention_reduction: float = 1.0
    paper_convention: dict = field(default_factory=dict)
    kept_fraction: float = 1.0  # kept / dense MACs over the gated layers
    kept_fraction_by_layer: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["note"] = (
            "counts per sample (all T steps); energies are estimates, arithmetic only (Horowitz ISSCC 2014, 45 nm)"
        )
        return d


def _batches(batches, max_batches):
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def measure_cost(
    model: nn.Module, batches: Iterable, max_batches: int | None = None, device=None
) -> MeasuredCost:
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
    updates = lif_updates - skipped
    gated = [lc for lc in layers if lc.kind == "conv-gated"]
    g_dense, g_kept = sum(lc.total("dense_macs") for lc in gated), sum(lc.total("kept_macs") for lc in gated)
    effective = eff_spike + eff_mac + updates + over
    paper = counter.paper.as_dict()
    paper.update(
        label="authors' convention",
        batch_sizes=sorted(counter.paper_batch_sizes),
        note="heuristic ratio of the authors' released evaluation code, reproduced as written; the membrane "
        "terms carry an extra factor B (batch size), so the figure depends on B",
    )
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
        effective_reduction=dense / (eff_spike + eff_mac + over)
        if eff_spike + eff_mac + over
        else float("inf"),
        energy_pj=energy,
        dense_energy_pj=dense_energy,
        layers=[asdict(lc) for lc in layers],
        dense_mac_reduction=dense / (kept + over) if kept + over else float("inf"),
        effective_op_reduction=dense / effective if effective else float("inf"),
        paper_convention_reduction=counter.paper.reduction() if gated else 1.0,
        paper_convention=paper,
        kept_fraction=g_kept / g_dense if g_dense else 1.0,
        kept_fraction_by_layer={
            lc.name: lc.total("kept_macs") / lc.total("dense_macs") for lc in gated if lc.total("dense_macs")
        },
    )


def format_measured(c: MeasuredCost, title: str = "") -> str:
    lines = [
        f"measured cost{(' of ' + title) if title else ''}: {c.samples} samples, T={c.T} (per sample, all steps)"
    ]
    lines.append(f"  dense MACs            {c.dense_macs:,.0f}")
    lines.append(f"  kept MACs             {c.kept_macs:,.0f}")
    lines.append(f"  predictor overhead    {c.overhead_macs:,.0f}")
    lines.append(f"  SOPs                  {c.sops:,.0f}")
    lines.append(f"  membrane updates      {c.membrane_updates:,.0f} (skipped {c.skipped_updates:,.0f})")
    lines.append(f"  FLOPs reduction       {c.flops_reduction:.2f}x   = dense / (kept + overhead)")
    lines.append(
        f"  effective reduction   {c.effective_reduction:.2f}x   = dense / (SOPs or kept MACs + overhead)"
    )
    lines.append("  three accountings:")
    lines.append(
        f"    dense_mac_reduction        {c.dense_mac_reduction:.2f}x   = dense / (kept MACs + overhead)"
    )
    lines.append(
        f"    effective_op_reduction     {c.effective_op_reduction:.2f}x   "
        "= dense / (SOPs into kept outputs + membrane updates + overhead)"
    )
    bs = ", ".join(str(b) for b in c.paper_convention.get("batch_sizes", [])) or "-"
    lines.append(
        f"    paper_convention_reduction {c.paper_convention_reduction:.2f}x   (authors' convention, B = {bs})"
    )
    lines.append(f"  kept_fraction (gated layers) {c.kept_fraction:.3f}")
    for name, f in c.kept_fraction_by_layer.items():
        lines.append(f"    {name:24s} {f:.3f}")
    lines.append("  energy ESTIMATES (arithmetic only; Horowitz ISSCC 2014, 45 nm):")
    for k, v in c.energy_pj.items():
        lines.append(
            f"    {k:12s} {v / 1e6:10.3f} uJ   (dense MAC network: {c.dense_energy_pj[k] / 1e6:.3f} uJ)"
        )
    return "\n".join(lines)


def cost_report(
    model: nn.Module, input_shape, batches: Iterable | None = None, max_batches: int | None = None
) -> dict:
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
            dense_mac_reduction=m.dense_mac_reduction,
            effective_op_reduction=m.effective_op_reduction,
            paper_convention_reduction=m.paper_convention_reduction,
            paper_convention_batch_sizes=m.paper_convention.get("batch_sizes", []),
            kept_fraction=m.kept_fraction,
            kept_fraction_by_layer=m.kept_fraction_by_layer,
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
