"""Cost accounting (docs/method.md#accountings, #memory): memory, dense MACs, and measured kept MACs /
SOPs / energy.

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

from spquant.cost.hooks import LayerCost, conv_sops
from spquant.cost.measured import ENERGY_PRESETS, MeasuredCost, cost_report, format_measured, measure_cost
from spquant.cost.static import MB, StaticCost, format_static, static_cost
from spquant.cost.summary import membrane_bits, model_summary

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
    "cost_report",
    "model_summary",
    "membrane_bits",
]
