"""The learned channel gate (with the optional spatial block gate), its self-supervised mass target
and the gate loss."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from spquant.prune.options import resolve_prune_options

__all__ = [
    "mass_target",
    "topk_target",
    "channel_importance",
    "budget_gap",
    "ChannelGate",
    "build_gate",
    "gate_modules",
    "gate_loss",
    "set_training_progress",
]


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


@torch.no_grad()
def topk_target(importance: torch.Tensor, keep: float, dim: int = -1) -> torch.Tensor:
    """{0,1} target keeping the ``round(keep * C)`` most important entries along ``dim`` (at least one).

    The budget target: unlike :func:`mass_target` its kept fraction is fixed by ``keep``, whatever
    the shape of the importance distribution. Ties are broken by ``topk``'s order.

    >>> topk_target(torch.tensor([0.1, 0.7, 0.05, 0.3]), 0.5).tolist()
    [0.0, 1.0, 0.0, 1.0]
    >>> topk_target(torch.tensor([[3.0, 1.0, 2.0]]), 0.1).tolist()   # never fewer than one
    [[1.0, 0.0, 0.0]]
    """
    imp = importance.detach().float().movedim(dim, -1)
    C = imp.shape[-1]
    k = max(1, min(C, int(round(keep * C))))
    idx = imp.topk(k, dim=-1).indices
    target = torch.zeros_like(imp).scatter(-1, idx, 1.0)
    return target.movedim(-1, dim)


def channel_importance(current: torch.Tensor, signal: str = "max_abs") -> torch.Tensor:
    """Per-channel importance [T, B, C] of an ungated current [T, B, C, H, W] (detached).

    ``max_abs``: max over space of |I| (the method's rule); ``l1``: mean over space of |I|;
    ``pos_l1``: mean over space of max(I, 0) (only positive current pushes a neuron towards a spike).
    """
    c = current.detach()
    if signal == "max_abs":  # max |I| = max(max I, -min I): two reductions, no full-size |I| temporary
        return torch.maximum(c.amax(dim=(3, 4)), c.amin(dim=(3, 4)).neg_())
    if signal == "l1":
        return c.abs().mean(dim=(3, 4))
    if signal == "pos_l1":
        return c.clamp_min(0).mean(dim=(3, 4))
    raise ValueError(f"unknown importance signal {signal!r}; known: max_abs, l1, pos_l1")


def budget_gap(p: torch.Tensor, g: torch.Tensor, keep: float) -> torch.Tensor:
    """Squared gap between the kept fraction of a layer's channels and ``keep``.

    The value uses the binarized gates ``g`` (the fraction actually kept), the gradient flows to the
    probabilities ``p`` (straight-through): ``kept = mean(p) + (mean(g) - mean(p)).detach()``.
    Every channel of a layer costs the same MACs, so the channel fraction is the MAC fraction.
    """
    soft = p.mean()
    kept = soft + (g.detach().mean() - soft).detach()
    return (kept - keep) ** 2


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
    r"""Learned channel gate of one conv layer (docs/method.md#channel-gate), optionally with a spatial
    block gate.

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
        self.keep = float(opt["keep"])
        target = opt["gate_target"]
        self.target_kind = ("budget" if self.keep < 1.0 else "mass") if target == "auto" else target
        imp = opt["importance"]
        self.importance = ("pos_l1" if self.target_kind == "budget" else "max_abs") if imp == "auto" else imp
        self.budget_weight = float(opt["budget_weight"])
        self.target_scope = opt["target_scope"]
        self.layer_keep = max(self.keep, float(opt["min_keep"]))  # per-layer floor
        self.warmup = float(opt["warmup"]) if self.keep < 1.0 else 0.0
        self.ramp = float(opt["ramp"]) if self.keep < 1.0 else 0.0
        # read by the trainer's optimizer: the predictor's lr is train.lr times this
        self.lr_scale = float(opt["predictor_lr_scale"]) if self.target_kind == "budget" else 1.0
        self.progress = 1.0  # fraction of training done; set by set_training_progress
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
            if self.keep < 1.0 and float(opt["init_spread"]) > 0:
                with torch.no_grad():
                    self.predictor.bias.add_((torch.rand(self.c_out) - 0.5) * float(opt["init_spread"]))
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
            f"c_in={self.c_in}, c_out={self.c_out}, learned={self.learned}, target={self.target_kind}, "
            f"keep={self.layer_keep}, mass={self.mass}, spatial={self.spatial}"
        )

    def current_keep(self) -> float:
        """The layer's target now: 1 during the warm-up, then linearly down to ``layer_keep`` over
        the ramp (outside training, or after the ramp: ``layer_keep``)."""
        if not self.training or self.ramp <= 0:
            return self.layer_keep
        done = (self.progress - self.warmup) / self.ramp
        return 1.0 - (1.0 - self.layer_keep) * min(1.0, max(0.0, done))

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
            if self.training and self.progress < self.warmup:
                # open-gate warm-up: the network trains unpruned while the predictor learns its target
                gate = torch.ones(T, B, self.c_out, 1, 1, dtype=current.dtype, device=current.device)
            else:
                gate = g.reshape(T, B, self.c_out, 1, 1)
            if want_loss:
                importance = channel_importance(current, self.importance)  # [T, B, C_out]
                if self.target_kind == "budget":
                    k = self.current_keep()
                    if self.target_scope == "batch":
                        importance = importance.mean(dim=(0, 1), keepdim=True).expand_as(importance)
                    target = topk_target(importance, k)
                    loss = F.binary_cross_entropy_with_logits(logits, target)
                    loss = loss + self.budget_weight * budget_gap(p, g, k)
                else:
                    target = mass_target(importance, self.mass)
                    loss = F.binary_cross_entropy_with_logits(logits, target)
                losses.append(loss)
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
            sg_full = sg.repeat_interleave(self.block, dim=3).repeat_interleave(self.block, dim=4)[
                ..., :H, :W
            ]
            self.last_spatial = sg_full.detach()
            gate = sg_full if gate is None else gate * sg_full
        else:
            self.last_spatial = None
        self.last_loss = torch.stack(losses).sum() if (want_loss and losses) else None
        return gate

    # -- cost ---------------------------------------------------------------------------------
    def overhead_macs(
        self, in_hw: tuple[int, int] | None = None, out_hw: tuple[int, int] | None = None
    ) -> int:
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


def set_training_progress(model: nn.Module, fraction: float) -> None:
    """Tell every gate of ``model`` how far training is (0..1); drives the open-gate warm-up."""
    for g in gate_modules(model):
        g.progress = float(fraction)


def gate_loss(model: nn.Module) -> torch.Tensor:
    """MEAN over the gates of ``model`` of their losses from the last forward (0-dim zero if none):
    BCE against the target, plus ``budget_weight`` x the budget gap with the budget target.

    Only gates that computed a loss (training mode, or ``compute_loss=True``) count. The trainer
    adds ``prune_loss_weight(spec) * gate_loss(model)`` to the task loss.
    """
    losses = [g.last_loss for g in gate_modules(model) if g.last_loss is not None]
    if not losses:
        p = next(iter(model.parameters()), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return torch.stack(losses).mean()
