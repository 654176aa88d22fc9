"""The cost summary a training run stores in its ``run.json``: bits, memory and, in spquant mode,
the measured FLOPs reduction on a few test batches."""

from __future__ import annotations

import math

import torch
from torch import nn

from spquant.cost.measured import measure_cost
from spquant.cost.static import static_cost

__all__ = ["membrane_bits", "model_summary"]


def membrane_bits(spec) -> int:
    """Stored bits per membrane value: 32 in FP32, else ceil(log2(levels)) (ternary -> 2, as the paper counts)."""
    if not spec.quantized:
        return 32
    return max(1, math.ceil(math.log2(spec.membrane_ub - spec.membrane_lb + 1)))


def model_summary(model: nn.Module, config, test_data=None, device="cpu", flops_batches: int = 2) -> dict:
    """Bits, memory (MB = 1e6 bytes) and, in spquant mode, the measured FLOPs reduction."""
    spec = config.quant
    input_shape = (config.model.in_channels, *config.model.input)
    out = {
        "mode": spec.mode,
        "weight_bits": spec.weight_bits if spec.quantized else 32,
        "first_bits": (spec.first_bits or 32) if spec.quantized else 32,
        "last_bits": (spec.last_bits or 32) if spec.quantized else 32,
        "membrane_bits": membrane_bits(spec),
        "membrane_levels": (spec.membrane_ub - spec.membrane_lb + 1) if spec.quantized else None,
    }
    sc = static_cost(model, input_shape=input_shape)
    out.update(
        {
            "params": int(sc.params),
            "neurons": int(sc.lif_neurons),
            "weight_mb": float(sc.weight_memory_mb),
            "membrane_mb": float(sc.membrane_mb_paper),
            "total_mb": float(sc.total_mb),
            "weight_mb_packed": float(sc.weight_memory_mb_packed),
            "membrane_mb_packed": float(sc.membrane_mb_packed),
            "total_mb_packed": float(sc.total_mb_packed),
            "total_mb_fp32": float(sc.total_mb_fp32),
            "memory_reduction": float(sc.memory_reduction),
            "memory_reduction_packed": float(sc.memory_reduction_packed),
            "dense_macs_per_step": int(sc.dense_macs),
        }
    )
    if spec.pruned and test_data is not None:
        T = config.model.T
        batches = [
            test_data.batch(torch.arange(s, min(s + 100, len(test_data))), T)[0].to(device)
            for s in range(0, min(len(test_data), 100 * flops_batches), 100)
        ]
        mc = measure_cost(model, batches)
        out["flops_reduction"] = float(mc.flops_reduction)
        out["effective_reduction"] = float(mc.effective_reduction)
        out["dense_mac_reduction"] = float(mc.dense_mac_reduction)
        out["effective_op_reduction"] = float(mc.effective_op_reduction)
        out["paper_convention_reduction"] = float(mc.paper_convention_reduction)
        out["paper_convention_batch_sizes"] = list(mc.paper_convention.get("batch_sizes", []))
        out["kept_fraction"] = float(mc.kept_fraction)
        out["kept_fraction_by_layer"] = {k: float(v) for k, v in mc.kept_fraction_by_layer.items()}
        total_updates = mc.membrane_updates + mc.skipped_updates
        out["skipped_update_fraction"] = float(mc.skipped_updates / total_updates) if total_updates else 0.0
    return out
