"""Spatial-channel pruning with a membrane-potential prior (SPEC §5).

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
  recurrence (see :func:`spquant.neuron.lif_reference`).

A neuron's current is zeroed if *either* mechanism says skip **[choice]**.

Statistics: :func:`record_prune_stats` (a context manager) / :func:`collect_prune_stats` give per
layer the active-channel fraction per time step, spatially skipped fraction, spike rate and the
membrane-level histogram. The same recording machinery (:class:`GateRecorder`) feeds
:func:`spquant.cost.measure_cost`.

All options with their defaults are in :data:`PRUNE_DEFAULTS`; see ``docs/pruning_and_cost.md``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "PRUNE_DEFAULTS",
    "PRUNE_OPTION_DOCS",
    "validate_prune_options",
    "resolve_prune_options",
    "prune_loss_weight",
    "mass_target",
    "ChannelGate",
    "MembranePrior",
    "build_gate",
    "build_prior",
    "gate_loss",
    "gate_modules",
    "GateRecorder",
    "record_prune_stats",
    "collect_prune_stats",
]

# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
PRUNE_DEFAULTS: dict[str, Any] = {
    # learned channel gate
    "learned_gate": True,
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
    "learned_gate": "use the learned channel-gate predictor (SPEC §5.1)",
    "mass": "self-supervised target: keep the smallest set of channels holding this fraction of the "
    "max-|current| mass (SPEC §5.2), in (0, 1]",
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
    "channel_prior_threshold (SPEC §5.3)",
    "channel_prior_threshold": "threshold of the channel prior (default -0.8)",
    "spatial_prior": "skip a neuron at t > 0 when its stored potential sits at the lowest level",
    "spatial_prior_level": "a neuron is skipped when m_{t-1} <= this level; None = the membrane "
    "quantizer's lowest level lb (-1 for ternary; -1.0 for an FP32 membrane)",
    "spatial_gate": "add the optional learned 2x2 spatial block gate (SPEC §5.4) [choice]",
    "spatial_block": "block size of the spatial block gate",
    "spatial_mass": "mass ratio of the spatial gate's self-supervised target over blocks",
    "spatial_temperature": "temperature of the Gumbel-sigmoid of the spatial gate (noise in training only)",
    "spatial_init_bias": "initial bias of the spatial gate's 3x3 conv (positive: blocks start ON)",
}

_BOOL_KEYS = {"learned_gate", "input_scale", "detach_input", "channel_prior", "spatial_prior", "spatial_gate"}
_FLOAT_KEYS = {
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
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and (value == 32 or 2 <= value <= 16))
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
    }
    for key, (lo, hi, lo_in, hi_in) in ranges.items():
        v = merged[key]
        if isinstance(v, (int, float)) and not ((v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)):
            bad.append(f"{key}={v!r} (must be in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'})")
    for key in ("softmax_temperature", "spatial_temperature"):
        if isinstance(merged[key], (int, float)) and merged[key] <= 0:
            bad.append(f"{key}={merged[key]!r} (must be > 0)")
    if isinstance(merged["loss_weight"], (int, float)) and merged["loss_weight"] < 0:
        bad.append(f"loss_weight={merged['loss_weight']!r} (must be >= 0)")
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


# --------------------------------------------------------------------------------------------
# self-supervised target
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def mass_target(importance: torch.Tensor, mass: float = 0.85, dim: int = -1) -> torch.Tensor:
    """{0,1} target: the smallest set of entries along ``dim`` whose share of the total reaches ``mass``.

    ``importance`` is non-negative (e.g. a_c = max over space of |I_c|). Entries are normalised to
    sum 1, sorted descending, and the shortest prefix whose cumulative mass reaches ``mass`` is kept
    (ties are broken by sort order). An all-zero row gives an all-zero target (nothing to compute).

    >>> mass_target(torch.tensor([0.5, 0.3, 0.15, 0.05])).tolist()   # 0.5+0.3 = 0.8 < 0.85
    [1.0, 1.0, 1.0, 0.0]
    >>> mass_target(torch.tensor([0.05, 0.5, 0.15, 0.3]), mass=0.8).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    imp = importance.detach().float().clamp_min(0).movedim(dim, -1)
    total = imp.sum(-1, keepdim=True)
    share = imp / total.clamp_min(torch.finfo(imp.dtype).tiny)
    sorted_share, order = share.sort(-1, descending=True)
    before = sorted_share.cumsum(-1) - sorted_share  # mass held by the entries ranked above
    keep_sorted = (before < mass - 1e-6).float()
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    keep = keep * (total > 0).float()
    return keep.movedim(-1, dim).to(importance.dtype if importance.is_floating_point() else torch.float32)


class _BinarizeSTE(torch.autograd.Function):
    """Forward: 1[p >= at] exactly; backward: identity (straight-through) to p."""

    @staticmethod
    def forward(ctx, p, at):
        return (p >= at).to(p.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


# --------------------------------------------------------------------------------------------
# learned gate
# --------------------------------------------------------------------------------------------
class ChannelGate(nn.Module):
    r"""Learned channel gate of one conv layer (SPEC §5.1-5.2), optionally with a spatial block gate.

    ``forward(x, current)``: ``x`` = the layer's input spikes [T, B, C_in, H, W], ``current`` = the
    ungated current [T, B, C_out, H', W']. Returns the gate [T, B, C_out, 1, 1] (or
    [T, B, C_out, H', W'] with the spatial gate), values exactly {0, 1}, straight-through gradient.

    .. math::
        p_t = \sigma(W \cdot \mathrm{softmax}(\mathrm{GAP}(s^{l-1}_t)/\tau_s)\cdot C_{in} + b),\qquad
        g_t = 1[p_t \ge 0.5]

    When the module is in training mode (or ``compute_loss`` is True) the forward also computes the
    BCE-with-logits loss of the logits against :func:`mass_target` of the ungated current (per
    sample, per time step, detached) and stores it in ``last_loss`` (plus ``last_target`` and
    ``last_gate`` for inspection); :func:`gate_loss` collects it.
    """

    def __init__(self, c_in: int, c_out: int, options: dict | None = None):
        super().__init__()
        opt = resolve_prune_options(options)
        self.c_in, self.c_out = int(c_in), int(c_out)
        self.learned = bool(opt["learned_gate"])
        self.mass = float(opt["mass"])
        self.binarize_at = float(opt["binarize_at"])
        self.input_scale = bool(opt["input_scale"])
        self.temperature = float(opt["softmax_temperature"])
        self.detach_input = bool(opt["detach_input"])
        from spquant.quant import weight_quantizer

        self.predictor_bits = opt["predictor_bits"]
        self.predictor: nn.Conv2d | None = None
        self.predictor_quant: nn.Module | None = None
        if self.learned:
            self.predictor_quant = weight_quantizer(self.predictor_bits)
            self.predictor = nn.Conv2d(self.c_in, self.c_out, 1, bias=True)
            nn.init.normal_(self.predictor.weight, 0.0, float(opt["init_std"]))
            nn.init.constant_(self.predictor.bias, float(opt["init_bias"]))
        self.spatial = bool(opt["spatial_gate"])
        self.block = int(opt["spatial_block"])
        self.spatial_mass = float(opt["spatial_mass"])
        self.spatial_temperature = float(opt["spatial_temperature"])
        self.spatial_conv: nn.Conv2d | None = None
        self.spatial_quant: nn.Module | None = None
        if self.spatial:
            self.spatial_quant = weight_quantizer(self.predictor_bits)
            self.spatial_conv = nn.Conv2d(self.c_in, 1, 3, padding=1, bias=True)
            nn.init.normal_(self.spatial_conv.weight, 0.0, float(opt["init_std"]))
            nn.init.constant_(self.spatial_conv.bias, float(opt["spatial_init_bias"]))
        self.compute_loss = False
        self.record = False
        self.last_loss: torch.Tensor | None = None
        self.last_target: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self.last_gate: torch.Tensor | None = None  # channel gate [T, B, C_out] (detached)
        self.last_spatial: torch.Tensor | None = None  # spatial gate [T, B, 1, H', W'] (detached)
        self.last_input_hw: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        return (
            f"c_in={self.c_in}, c_out={self.c_out}, learned={self.learned}, mass={self.mass}, "
            f"spatial={self.spatial}"
        )

    # -- predictor ----------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-gate logits [T, B, C_out] from input spikes [T, B, C_in, H, W]."""
        assert self.predictor is not None
        T, B, C = x.shape[:3]
        pooled = x.mean(dim=tuple(range(3, x.dim())))  # [T, B, C_in]
        s = torch.softmax(pooled / self.temperature, dim=-1)
        if self.input_scale:
            s = s * C
        w = self.predictor_quant(self.predictor.weight)
        return F.conv2d(s.reshape(T * B, C, 1, 1), w, self.predictor.bias).reshape(T, B, self.c_out)

    def spatial_logits(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Spatial block logits [T, B, 1, Hb, Wb] (one per ``block`` x ``block`` block of the output)."""
        assert self.spatial_conv is not None
        T, B = x.shape[:2]
        hb, wb = math.ceil(out_hw[0] / self.block), math.ceil(out_hw[1] / self.block)
        pooled = F.adaptive_avg_pool2d(x.reshape(T * B, *x.shape[2:]), (hb, wb))
        conv = self.spatial_conv
        w = self.spatial_quant(conv.weight)
        return F.conv2d(pooled, w, conv.bias, padding=conv.padding).reshape(T, B, 1, hb, wb)

    def forward(self, x: torch.Tensor, current: torch.Tensor) -> torch.Tensor | None:
        if x.dim() != 5 or current.dim() != 5:
            raise ValueError(
                f"ChannelGate expects x [T, B, C_in, H, W] and current [T, B, C_out, H, W], "
                f"got {tuple(x.shape)} and {tuple(current.shape)}"
            )
        T, B = current.shape[:2]
        xin = x.detach() if self.detach_input else x
        want_loss = self.training or self.compute_loss
        losses = []
        gate = None
        self.last_input_hw = (int(x.shape[3]), int(x.shape[4]))
        if self.learned:
            logits = self.logits(xin)
            p = torch.sigmoid(logits)
            g = _BinarizeSTE.apply(p, self.binarize_at)
            gate = g.reshape(T, B, self.c_out, 1, 1)
            if want_loss:
                importance = current.detach().abs().amax(dim=(3, 4))  # [T, B, C_out]
                target = mass_target(importance, self.mass)
                losses.append(F.binary_cross_entropy_with_logits(logits, target))
                self.last_target = target
            else:
                self.last_target = None
            self.last_logits = logits.detach()
            self.last_gate = g.detach()
        else:
            self.last_gate = None
        if self.spatial:
            H, W = current.shape[3:]
            sl = self.spatial_logits(xin, (H, W))
            if self.training:  # Gumbel(logistic)-sigmoid noise in training only
                u = torch.rand_like(sl).clamp(1e-6, 1 - 1e-6)
                noisy = (sl + torch.log(u) - torch.log1p(-u)) / self.spatial_temperature
            else:
                noisy = sl / self.spatial_temperature
            sg = _BinarizeSTE.apply(torch.sigmoid(noisy), self.binarize_at)
            if want_loss:
                block_imp = F.adaptive_max_pool2d(
                    current.detach().abs().amax(dim=2).reshape(T * B, 1, H, W), sl.shape[3:]
                ).reshape(T, B, -1)
                st = mass_target(block_imp, self.spatial_mass).reshape(sl.shape)
                losses.append(F.binary_cross_entropy_with_logits(sl, st))
            sg_full = sg.repeat_interleave(self.block, dim=3).repeat_interleave(self.block, dim=4)[..., :H, :W]
            self.last_spatial = sg_full.detach()
            gate = sg_full if gate is None else gate * sg_full
        else:
            self.last_spatial = None
        self.last_loss = torch.stack(losses).sum() if (want_loss and losses) else None
        return gate

    # -- cost ---------------------------------------------------------------------------------
    def overhead_macs(self, in_hw: tuple[int, int] | None = None, out_hw: tuple[int, int] | None = None) -> int:
        """Operations of the predictor per sample per time step (counted as MACs, conservatively).

        Channel gate: GAP ``C_in*H*W`` accumulations + softmax ``3*C_in`` (exp, sum, divide) +
        1x1 conv ``C_in*C_out`` + ``2*C_out`` (bias, sigmoid/compare). Spatial gate: pooling
        ``C_in*H*W`` + 3x3 conv ``9*C_in*Hb*Wb`` + ``2*Hb*Wb``.
        """
        h, w = in_hw or self.last_input_hw or (1, 1)
        ops = 0
        if self.learned:
            ops += self.c_in * h * w + 3 * self.c_in + self.c_in * self.c_out + 2 * self.c_out
        if self.spatial:
            oh, ow = out_hw or (h, w)
            hb, wb = math.ceil(oh / self.block), math.ceil(ow / self.block)
            ops += self.c_in * h * w + 9 * self.c_in * hb * wb + 2 * hb * wb
        return ops


def build_gate(c_in: int, c_out: int, options: dict | None = None) -> ChannelGate | None:
    """The gate module of a conv layer C_in -> C_out, or None when both gates are switched off."""
    opt = resolve_prune_options(options)
    if not opt["learned_gate"] and not opt["spatial_gate"]:
        return None
    return ChannelGate(c_in, c_out, opt)


def gate_modules(model: nn.Module) -> list[ChannelGate]:
    return [m for m in model.modules() if isinstance(m, ChannelGate)]


def gate_loss(model: nn.Module) -> torch.Tensor:
    """MEAN over the gates of ``model`` of their BCE losses from the last forward (0-dim zero if none).

    Only gates that computed a loss (training mode, or ``compute_loss=True``) count. The trainer
    adds ``prune_loss_weight(spec) * gate_loss(model)`` to the task loss.
    """
    losses = [g.last_loss for g in gate_modules(model) if g.last_loss is not None]
    if not losses:
        p = next(iter(model.parameters()), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------------------------
# membrane-potential prior
# --------------------------------------------------------------------------------------------
class MembranePrior:
    """Membrane-potential prior (SPEC §5.3): skips neurons at t > 0 from the stored m_{t-1}.

    ``keep_mask(m_prev, membrane)`` returns a {0,1} mask broadcastable to ``m_prev`` [B, C, ...]
    (1 = update) or None when both parts are off:

    * channel prior: keep channel c iff mean over space of m_{t-1}[b, c] >= ``channel_threshold``
      (mask [B, C, 1, 1]); only for inputs with spatial dims;
    * spatial prior: keep neuron iff m_{t-1} > ``spatial_level`` (default: the membrane's lowest
      level ``lb``; -1.0 for an FP32 membrane).

    When ``record`` is True every call appends ``(channel_keep, spatial_keep)`` (bool tensors or
    None) to ``records``; the recorder of :func:`record_prune_stats` consumes them.

    Example::

        >>> import torch
        >>> prior = MembranePrior(channel=True, spatial=False)
        >>> m = torch.tensor([[[[-1., -1.], [-1., 0.]], [[0., 1.], [-1., 0.]]]])   # B=1, C=2
        >>> prior.keep_mask(m, None).flatten().tolist()      # channel 0 mean -0.75 >= -0.8: kept
        [1.0, 1.0]
        >>> MembranePrior(channel=True, spatial=False, channel_threshold=-0.7).keep_mask(m, None).flatten().tolist()
        [0.0, 1.0]
    """

    def __init__(
        self,
        channel: bool = True,
        channel_threshold: float = -0.8,
        spatial: bool = True,
        spatial_level: float | None = None,
    ):
        self.channel = bool(channel)
        self.channel_threshold = float(channel_threshold)
        self.spatial = bool(spatial)
        self.spatial_level = None if spatial_level is None else float(spatial_level)
        self.record = False
        self.records: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []

    def __repr__(self) -> str:
        return (
            f"MembranePrior(channel={self.channel}, channel_threshold={self.channel_threshold}, "
            f"spatial={self.spatial}, spatial_level={self.spatial_level})"
        )

    def level_for(self, membrane) -> float:
        if self.spatial_level is not None:
            return self.spatial_level
        return float(membrane.lb) if membrane is not None and hasattr(membrane, "lb") else -1.0

    @torch.no_grad()
    def masks(self, m_prev: torch.Tensor, membrane=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(channel_keep [B, C, 1, ...], spatial_keep [B, C, ...]) as bool tensors (None = part off)."""
        ch = sp = None
        if self.channel and m_prev.dim() >= 3:
            dims = tuple(range(2, m_prev.dim()))
            ch = m_prev.mean(dim=dims, keepdim=True) >= self.channel_threshold
        if self.spatial:
            sp = m_prev > self.level_for(membrane)
        return ch, sp

    @torch.no_grad()
    def keep_mask(self, m_prev: torch.Tensor, membrane=None) -> torch.Tensor | None:
        ch, sp = self.masks(m_prev, membrane)
        if self.record:
            self.records.append((ch, sp))
        if ch is None and sp is None:
            return None
        keep = ch if sp is None else (sp if ch is None else ch & sp)
        return keep.to(m_prev.dtype)

    # pickling: drop recorded tensors
    def __getstate__(self):
        state = dict(self.__dict__)
        state["records"] = []
        state["record"] = False
        return state


def build_prior(options: dict | None = None) -> MembranePrior | None:
    """The membrane prior for one layer, or None when both channel and spatial prior are off."""
    opt = resolve_prune_options(options)
    if not opt["channel_prior"] and not opt["spatial_prior"]:
        return None
    return MembranePrior(
        channel=opt["channel_prior"],
        channel_threshold=opt["channel_prior_threshold"],
        spatial=opt["spatial_prior"],
        spatial_level=opt["spatial_prior_level"],
    )


# --------------------------------------------------------------------------------------------
# recording: what was kept, per layer and time step
# --------------------------------------------------------------------------------------------
class LayerRecord:
    """What one gated/priored :class:`~spquant.layers.ConvBNLIF` did in one forward call.

    ``x``: input [T, B, C_in, H, W] (detached); ``keep``: bool [T, B, C_out, H', W'] neurons
    updated (learned gate AND prior); ``gate``: channel gate [T, B, C_out] or None;
    ``spatial_gate``: [T, B, 1, H', W'] or None; ``prior_channel`` / ``prior_spatial``: lists over
    t of the prior's bool masks (t = 0 has none).
    """

    def __init__(self, module, x, keep, gate, spatial_gate, prior_channel, prior_spatial):
        self.module, self.x, self.keep = module, x, keep
        self.gate, self.spatial_gate = gate, spatial_gate
        self.prior_channel, self.prior_spatial = prior_channel, prior_spatial


class GateRecorder:
    """Hooks every ``ConvBNLIF`` of a model; after each of its forwards calls ``callback(name, LayerRecord)``.

    Switches on ``record`` of the gates and priors while active (and restores it on ``close``).
    Works with any LIF backend that honours the prior contract (``keep_mask`` called once per t > 0).
    """

    def __init__(self, model: nn.Module, callback: Callable[[str, LayerRecord], None]):
        from spquant.layers import ConvBNLIF

        self.callback = callback
        self.handles = []
        self._saved = []
        for name, mod in model.named_modules():
            if isinstance(mod, ConvBNLIF):
                self.handles.append(mod.register_forward_pre_hook(self._pre))
                self.handles.append(mod.register_forward_hook(self._make_post(name)))
                prior = getattr(mod.neuron, "prior", None)
                if isinstance(prior, MembranePrior):
                    self._saved.append((prior, prior.record))
                    prior.record = True

    def _pre(self, mod, inputs):
        prior = getattr(mod.neuron, "prior", None)
        if isinstance(prior, MembranePrior):
            prior.records = []

    def _make_post(self, name):
        def post(mod, inputs, output):
            x = inputs[0].detach()
            T, B = output.shape[:2]
            shape = output.shape
            keep = torch.ones(shape, dtype=torch.bool, device=output.device)
            gate = spatial = None
            g = mod.gate
            if isinstance(g, ChannelGate):
                if g.last_gate is not None:
                    gate = g.last_gate > 0.5
                    keep &= gate.reshape(T, B, -1, 1, 1)
                if g.last_spatial is not None:
                    spatial = g.last_spatial > 0.5
                    keep &= spatial
            prior = getattr(mod.neuron, "prior", None)
            pc: list = [None]
            ps: list = [None]
            if isinstance(prior, MembranePrior):
                recs = prior.records
                prior.records = []
                if len(recs) not in (0, T - 1):
                    raise RuntimeError(f"prior of {name} recorded {len(recs)} masks for T={T}")
                for t, (ch, sp) in enumerate(recs, start=1):
                    if ch is not None:
                        keep[t] &= ch
                    if sp is not None:
                        keep[t] &= sp
                    pc.append(ch)
                    ps.append(sp)
            self.callback(name, LayerRecord(mod, x, keep, gate, spatial, pc, ps))

        return post

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        for prior, rec in self._saved:
            prior.record = rec
            prior.records = []
        self._saved = []


class PruneStats:
    """Accumulates per-layer pruning statistics; ``as_dict()`` gives the summary."""

    def __init__(self, model: nn.Module):
        from spquant.neuron import LIF

        self.model = model
        self.layers: dict[str, dict] = {}
        self._lifs = {n: m for n, m in model.named_modules() if isinstance(m, LIF)}

    def __call__(self, name: str, rec: LayerRecord):
        T = rec.keep.shape[0]
        d = self.layers.setdefault(name, {"steps": {}})
        for t in range(T):
            s = d["steps"].setdefault(
                t, {"n_channels": 0, "active_channels": 0, "gate_on": 0, "prior_channel_skip": 0, "neurons": 0, "kept": 0, "spatial_skip": 0}
            )
            k = rec.keep[t]  # [B, C, H, W]
            B, C = k.shape[:2]
            s["n_channels"] += B * C
            s["neurons"] += k.numel()
            s["kept"] += int(k.sum())
            # a channel is active when the channel-level decisions (gate, channel prior) keep it
            ch = torch.ones(B, C, dtype=torch.bool, device=k.device)
            if rec.gate is not None:
                ch &= rec.gate[t]
                s["gate_on"] += int(rec.gate[t].sum())
            else:
                s["gate_on"] += B * C
            pc = rec.prior_channel[t] if t < len(rec.prior_channel) else None
            if pc is not None:
                pcb = pc.reshape(B, C)
                s["prior_channel_skip"] += int((~pcb).sum())
                ch &= pcb
            s["active_channels"] += int(ch.sum())
            # spatial skip: neurons of active channels skipped by the spatial prior / block gate
            sp = torch.ones_like(k)
            if rec.spatial_gate is not None:
                sp &= rec.spatial_gate[t]
            ps = rec.prior_spatial[t] if t < len(rec.prior_spatial) else None
            if ps is not None:
                sp &= ps
            s["spatial_skip"] += int((~sp).sum())

    def as_dict(self) -> dict:
        out = {}
        for name, d in self.layers.items():
            steps = [d["steps"][t] for t in sorted(d["steps"])]
            mod = self.model.get_submodule(name)
            lif = mod.neuron
            tot = lambda key: sum(s[key] for s in steps)  # noqa: E731
            out[name] = {
                "active_channel_fraction": [s["active_channels"] / s["n_channels"] for s in steps],
                "gate_on_fraction": [s["gate_on"] / s["n_channels"] for s in steps],
                "prior_channel_skip_fraction": [s["prior_channel_skip"] / s["n_channels"] for s in steps],
                "spatial_skip_fraction": [s["spatial_skip"] / s["neurons"] for s in steps],
                "kept_fraction": [s["kept"] / s["neurons"] for s in steps],
                "mean_active_channel_fraction": tot("active_channels") / max(1, tot("n_channels")),
                "mean_spatial_skip_fraction": tot("spatial_skip") / max(1, tot("neurons")),
                "mean_kept_fraction": tot("kept") / max(1, tot("neurons")),
                "spike_rate": lif.spike_rate,
                "level_counts": dict(sorted(lif.stats["level_counts"].items())),
            }
        return out


@contextlib.contextmanager
def record_prune_stats(model: nn.Module) -> Iterator[PruneStats]:
    """Context manager: record pruning statistics of every forward inside it.

    Turns on LIF recording (spike rate, membrane-level histogram; stats are reset on entry) and the
    gate/prior recording; restores the flags on exit. ``stats.as_dict()`` gives, per ConvBNLIF
    (by module name): ``active_channel_fraction`` (per step), ``gate_on_fraction``,
    ``prior_channel_skip_fraction``, ``spatial_skip_fraction`` and ``kept_fraction`` (per step),
    their means, ``spike_rate`` and ``level_counts``.

    Example::

        >>> import torch
        >>> from spquant.models import VGG9, QuantSpec
        >>> net = VGG9(10, 2, (16, 16), width=0.0625, spec=QuantSpec(mode="spquant")).eval()
        >>> with record_prune_stats(net) as stats, torch.no_grad():
        ...     _ = net(torch.rand(3, 2, 2, 16, 16).round())
        >>> s = stats.as_dict()["features.0"]
        >>> len(s["active_channel_fraction"]), 0 <= s["mean_kept_fraction"] <= 1
        (3, True)
    """
    from spquant.neuron import LIF

    stats = PruneStats(model)
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    saved = [(m, m.record) for m in lifs]
    for m in lifs:
        m.reset_stats()
        m.record = True
    rec = GateRecorder(model, stats)
    try:
        yield stats
    finally:
        rec.close()
        for m, r in saved:
            m.record = r


@torch.no_grad()
def collect_prune_stats(model: nn.Module, batches, max_batches: int | None = None) -> dict:
    """Run ``model`` in eval mode on ``batches`` (tensors [T, B, ...] or (x, y) pairs) and return
    the per-layer statistics of :func:`record_prune_stats` (``as_dict()``)."""
    was_training = model.training
    model.eval()
    try:
        with record_prune_stats(model) as stats:
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
    finally:
        model.train(was_training)
    return stats.as_dict()
