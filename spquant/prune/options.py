"""The options of spatial-channel pruning: defaults, their documentation, validation."""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "PRUNE_DEFAULTS",
    "PRUNE_OPTION_DOCS",
    "validate_prune_options",
    "resolve_prune_options",
    "prune_loss_weight",
]

PRUNE_DEFAULTS: dict[str, Any] = {
    # learned channel gate
    "learned_gate": True,
    "keep": 1.0,
    "gate_target": "auto",
    "importance": "auto",
    "target_scope": "batch",
    "budget_weight": 4.0,
    "warmup": 0.2,
    "ramp": 0.3,
    "init_spread": 6.0,
    "predictor_lr_scale": 10.0,
    "min_keep": 0.1,
    "mass": 0.85,
    "loss_weight": 1.0,
    "binarize_at": 0.5,
    "init_bias": 3.0,
    "init_std": 0.01,
    "input_scale": True,
    "softmax_temperature": 1.0,
    "detach_input": True,
    "predictor_bits": 8,
    # membrane-potential prior
    "channel_prior": True,
    "channel_prior_threshold": -0.8,
    "spatial_prior": True,
    "spatial_prior_level": None,
    # optional spatial block gate
    "spatial_gate": False,
    "spatial_block": 2,
    "spatial_mass": 0.85,
    "spatial_temperature": 1.0,
    "spatial_init_bias": 3.0,
}

PRUNE_OPTION_DOCS: dict[str, str] = {
    "learned_gate": "use the learned channel-gate predictor (docs/method.md#channel-gate)",
    "keep": "target fraction of the dense MACs kept per gated layer (0, 1]; 1.0 = the mass target "
    "alone (no budget); below 1 the gate is trained towards keeping this fraction of its channels",
    "gate_target": "'auto' (budget when keep < 1, else mass), 'budget' (top-k by importance + budget "
    "loss), 'mass' (the method's mass-0.85 BCE target)",
    "importance": "channel importance of the target: 'max_abs' (max over space of |I|), 'l1' (mean "
    "|I|), 'pos_l1' (mean max(I, 0)); 'auto' = pos_l1 for the budget target (measured best, see "
    "docs/pruning_and_cost.md), max_abs for the mass target (the method's rule)",
    "target_scope": "budget target: 'sample' ranks channels per sample and time step (a dynamic gate), "
    "'batch' ranks them by their importance averaged over the batch and time steps (one shared top-k: "
    "the predictor learns a mostly static choice the network can adapt to)",
    "budget_weight": "weight of the budget term (gap between kept fraction and keep) in the gate loss",
    "warmup": "fraction of training during which the gates are held open (predictors still learn) "
    "when keep < 1",
    "ramp": "fraction of training, after the warm-up, over which the target falls linearly from 1 to keep",
    "init_spread": "when keep < 1, the predictor biases start spread uniformly over init_bias +- init_spread/2 "
    "(a common shift then turns channels off one by one instead of all at once)",
    "predictor_lr_scale": "when keep < 1, the gate predictors train at this multiple of train.lr (the "
    "logits must travel several units within the ramp; at the network's lr they move ~lr per step)",
    "min_keep": "per-layer floor: no gated layer is asked to keep less than this fraction",
    "mass": "self-supervised target: keep the smallest set of channels holding this fraction of the "
    "max-|current| mass (docs/method.md#mass-target), in (0, 1]",
    "loss_weight": "weight of gate_loss(model) in the training loss (gate_loss is the MEAN over gates)",
    "binarize_at": "gate = 1 where sigmoid(logit) >= binarize_at (straight-through gradient)",
    "init_bias": "initial bias of the 1x1 predictor conv; sigmoid(3) = 0.95 so gates start ON",
    "init_std": "std of the initial 1x1 predictor weights (small: start from the bias)",
    "input_scale": "multiply the channel softmax by C_in so its mean is 1 (a reparametrisation that "
    "keeps the predictor's effective learning rate independent of C_in) [choice]",
    "softmax_temperature": "pooled spike rates are divided by this before the softmax",
    "detach_input": "the predictor sees detached input spikes: gate loss and straight-through gradient "
    "train the predictor only, never the previous layer [choice]",
    "predictor_bits": "weight bits of the gate predictors (1x1 conv and spatial 3x3 conv): 2 = ternary, "
    "3..16 = SAWB, None or 32 = FP32; biases stay FP32. 8 by default, like the first/last layers [choice]",
    "channel_prior": "skip a channel at t > 0 when its mean stored potential m_{t-1} over space is below "
    "channel_prior_threshold (docs/method.md#membrane-prior)",
    "channel_prior_threshold": "threshold of the channel prior (default -0.8)",
    "spatial_prior": "skip a neuron at t > 0 when its stored potential sits at the lowest level",
    "spatial_prior_level": "a neuron is skipped when m_{t-1} <= this level; None = the membrane "
    "quantizer's lowest level lb (-1 for ternary; -1.0 for an FP32 membrane)",
    "spatial_gate": "add the optional learned 2x2 spatial block gate (docs/method.md#spatial-gate) [choice]",
    "spatial_block": "block size of the spatial block gate",
    "spatial_mass": "mass ratio of the spatial gate's self-supervised target over blocks",
    "spatial_temperature": "temperature of the Gumbel-sigmoid of the spatial gate (noise in training only)",
    "spatial_init_bias": "initial bias of the spatial gate's 3x3 conv (positive: blocks start ON)",
}

_BOOL_KEYS = {"learned_gate", "input_scale", "detach_input", "channel_prior", "spatial_prior", "spatial_gate"}
_FLOAT_KEYS = {
    "keep",
    "ramp",
    "init_spread",
    "predictor_lr_scale",
    "budget_weight",
    "warmup",
    "min_keep",
    "mass",
    "loss_weight",
    "binarize_at",
    "init_bias",
    "init_std",
    "softmax_temperature",
    "channel_prior_threshold",
    "spatial_mass",
    "spatial_temperature",
    "spatial_init_bias",
}
_INT_KEYS = {"spatial_block"}
_OPTIONAL_FLOAT_KEYS = {"spatial_prior_level"}
_OPTIONAL_BITS_KEYS = {"predictor_bits"}
_CHOICE_KEYS = {
    "gate_target": ("auto", "budget", "mass"),
    "importance": ("auto", "max_abs", "l1", "pos_l1"),
    "target_scope": ("sample", "batch"),
}


def validate_prune_options(options: dict | None) -> dict:
    """Check a ``prune`` options dict; raise ``ValueError`` naming unknown or mistyped keys.

    Returns the options merged over :data:`PRUNE_DEFAULTS`.

    >>> validate_prune_options({"mass": 0.9})["mass"]
    0.9
    >>> validate_prune_options({"mas": 0.9})
    Traceback (most recent call last):
    ...
    ValueError: unknown prune option(s) ['mas']; known: ...
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(PRUNE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown prune option(s) {unknown}; known: {sorted(PRUNE_DEFAULTS)}")
    bad: list[str] = []
    for key, value in options.items():
        if key in _BOOL_KEYS:
            ok = isinstance(value, bool)
        elif key in _FLOAT_KEYS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif key in _INT_KEYS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif key in _OPTIONAL_BITS_KEYS:
            ok = value is None or (
                isinstance(value, int) and not isinstance(value, bool) and (value == 32 or 2 <= value <= 16)
            )
        elif key in _CHOICE_KEYS:
            ok = value in _CHOICE_KEYS[key]
        elif key in _OPTIONAL_FLOAT_KEYS:
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        else:  # pragma: no cover - every key is in one of the sets
            ok = True
        if not ok:
            bad.append(f"{key}={value!r}")
    merged = {**PRUNE_DEFAULTS, **options}
    ranges = {
        "mass": (0.0, 1.0, False, True),
        "spatial_mass": (0.0, 1.0, False, True),
        "binarize_at": (0.0, 1.0, False, False),
        "keep": (0.0, 1.0, False, True),
        "warmup": (0.0, 1.0, True, False),
        "ramp": (0.0, 1.0, True, True),
        "init_spread": (0.0, 100.0, True, True),
        "predictor_lr_scale": (0.0, 1e4, False, True),
        "min_keep": (0.0, 1.0, True, True),
    }
    for key, (lo, hi, lo_in, hi_in) in ranges.items():
        v = merged[key]
        if isinstance(v, (int, float)) and not (
            (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        ):
            bad.append(f"{key}={v!r} (must be in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'})")
    for key in ("softmax_temperature", "spatial_temperature"):
        if isinstance(merged[key], (int, float)) and merged[key] <= 0:
            bad.append(f"{key}={merged[key]!r} (must be > 0)")
    for key in ("loss_weight", "budget_weight"):
        if isinstance(merged[key], (int, float)) and merged[key] < 0:
            bad.append(f"{key}={merged[key]!r} (must be >= 0)")
    if isinstance(merged["spatial_block"], int) and merged["spatial_block"] < 1:
        bad.append(f"spatial_block={merged['spatial_block']!r} (must be >= 1)")
    if bad:
        raise ValueError(f"invalid prune option(s): {', '.join(bad)}")
    return merged


def resolve_prune_options(options: dict | None) -> dict:
    """``options`` merged over :data:`PRUNE_DEFAULTS` (validated)."""
    return validate_prune_options(options)


def prune_loss_weight(spec_or_options) -> float:
    """The weight of :func:`gate_loss` in the training loss.

    Accepts a :class:`~spquant.models.QuantSpec` (0.0 unless its mode is ``'spquant'``) or a
    ``prune`` options dict.
    """
    if isinstance(spec_or_options, dict) or spec_or_options is None:
        return float(resolve_prune_options(spec_or_options)["loss_weight"])
    if not getattr(spec_or_options, "pruned", False):
        return 0.0
    return float(resolve_prune_options(spec_or_options.prune)["loss_weight"])
