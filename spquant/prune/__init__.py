"""Spatial-channel pruning with a membrane-potential prior (docs/method.md#pruning).

Two mechanisms switch off whole output channels (and, optionally, spatial positions) of a conv
layer, per sample and per time step, so that their MACs and membrane updates can be skipped:

* the **learned gate** (:class:`ChannelGate`, built by :func:`build_gate`): global-average-pool of
  the layer's *input* spikes at step t -> softmax over channels -> 1x1 conv (C_in -> C_out) ->
  sigmoid -> binarize at ``binarize_at`` with a straight-through estimator. It is trained against a
  self-supervised *mass target* (:func:`mass_target`) computed from the ungated current with a
  BCE-with-logits loss (:func:`gate_loss`), added to the task loss with weight ``loss_weight``.
  An optional spatial block gate (2x2 blocks) multiplies in per-position decisions.
* the **membrane-potential prior** (:class:`MembranePrior`, built by :func:`build_prior`): at
  t > 0 a channel whose mean stored potential m_{t-1} over space is below
  ``channel_prior_threshold`` is skipped; a neuron whose stored potential sits at the lowest level
  is skipped (spatial prior). The neuron calls ``prior.keep_mask(m_prev, membrane)`` inside its
  recurrence (see :func:`spquant.neuron.lif_reference`); the fused kernel calls
  ``prior.split_keep`` (the same decision split into a channel and a spatial part).

A neuron's current is zeroed if *either* mechanism says skip **[choice]**.

Statistics: :func:`record_prune_stats` (a context manager) / :func:`collect_prune_stats` give per
layer the active-channel fraction per time step, spatially skipped fraction, spike rate and the
membrane-level histogram. The same recording machinery (:class:`GateRecorder`) feeds
:func:`spquant.cost.measure_cost`.

All options with their defaults are in :data:`PRUNE_DEFAULTS`; see ``docs/pruning_and_cost.md``.
"""

from spquant.prune.gate import (
    ChannelGate,
    budget_gap,
    build_gate,
    channel_importance,
    gate_loss,
    gate_modules,
    mass_target,
    set_training_progress,
    topk_target,
)
from spquant.prune.options import (
    PRUNE_DEFAULTS,
    PRUNE_OPTION_DOCS,
    prune_loss_weight,
    resolve_prune_options,
    validate_prune_options,
)
from spquant.prune.prior import MembranePrior, build_prior
from spquant.prune.stats import GateRecorder, LayerRecord, PruneStats, collect_prune_stats, record_prune_stats

__all__ = [
    "PRUNE_DEFAULTS",
    "PRUNE_OPTION_DOCS",
    "validate_prune_options",
    "resolve_prune_options",
    "prune_loss_weight",
    "mass_target",
    "topk_target",
    "channel_importance",
    "budget_gap",
    "set_training_progress",
    "ChannelGate",
    "MembranePrior",
    "build_gate",
    "build_prior",
    "gate_loss",
    "gate_modules",
    "GateRecorder",
    "LayerRecord",
    "PruneStats",
    "record_prune_stats",
    "collect_prune_stats",
]
