"""What every spiking neuron of spquant provides, and what cost, prune, deploy and the trainer rely on.

A neuron model subclasses :class:`SpikingNeuron` and adds only its update (its ``forward`` over
``[T, B, ...]`` currents, normally a loop over a pure step function). The base class owns:

* ``tau``: the leak factor of the recurrence (deploy folds it into a right shift);
* ``threshold``: V_th, a buffer or (``learn_threshold``) a parameter, per layer or per channel;
  :meth:`SpikingNeuron.threshold_for` shapes it against one step;
* ``membrane``: the quantizer of the stored membrane (an
  :class:`~spquant.quant.IntegerMembrane` grid ``lb..ub``) or None for FP32;
* ``surrogate``: the spike surrogate (:mod:`spquant.neuron.surrogate`);
* ``reset``: how the membrane is reset after a spike (``"hard"``: to 0);
* ``prior``: an optional membrane prior (:class:`MembranePriorLike`) asked at t > 0 which neurons
  to skip;
* statistics: with ``record = True`` each forward adds its spike count, neuron-steps and the
  histogram of stored membrane levels to ``stats`` (:meth:`SpikingNeuron.reset_stats`).

State lives only inside one forward call, so there is nothing to reset between batches.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from spquant.neuron.surrogate import Surrogate, Triangle
from spquant.quant import IntegerMembrane

__all__ = ["SpikingNeuron", "MembranePriorLike"]


class MembranePriorLike(Protocol):
    """Decides, from the stored membrane m_{t-1}, which neurons are skipped at step t."""

    def keep_mask(self, m_prev: torch.Tensor, membrane: IntegerMembrane | None) -> torch.Tensor | None:
        """A {0,1} mask broadcastable to m_prev (1 = update), or None for 'keep all'.

        A prior may also offer ``split_keep(m_prev, membrane, out=None)`` returning the same decision
        as ``(channel_keep, spatial_keep)`` (a bool ``[B, C, 1, ...]`` and a 0./1. mask in m_prev's
        dtype, either None when off; keep = channel & spatial) or ``NotImplemented``: the fused LIF
        then applies it without a full-size float mask (see :class:`spquant.prune.MembranePrior`)."""


class SpikingNeuron(nn.Module):
    """Base of the multi-step spiking neurons: threshold, membrane grid, surrogate, reset, leak, stats.

    Args:
        tau: leak factor in [0, 1].
        threshold: initial V_th.
        learn_threshold: False, ``'layer'`` (one scalar) or ``'channel'`` (one per channel; needs
            ``channels``).
        membrane: None (FP32) or an ``IntegerMembrane``.
        surrogate: spike surrogate (default ``Triangle()``).
        channels: number of channels (dim 2 of the input), for per-channel thresholds.
        prior: optional membrane-potential prior (see :mod:`spquant.prune`).
    """

    #: membrane reset after a spike: "hard" = set to 0 (the only one the deploy format knows)
    reset = "hard"

    def __init__(
        self,
        tau: float = 0.5,
        threshold: float = 1.0,
        learn_threshold: bool | str = False,
        membrane: IntegerMembrane | None = None,
        surrogate: Surrogate | None = None,
        channels: int | None = None,
        prior: MembranePriorLike | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"{name} tau must be in [0, 1], got {tau}")
        if learn_threshold not in (False, None, "layer", "channel", True):
            raise ValueError(f"learn_threshold must be False, 'layer' or 'channel', got {learn_threshold!r}")
        if learn_threshold is True:
            learn_threshold = "layer"
        if learn_threshold == "channel" and not channels:
            raise ValueError("learn_threshold='channel' needs channels=C")
        self.tau = float(tau)
        self.learn_threshold = learn_threshold or False
        self.membrane = membrane
        self.surrogate = surrogate or Triangle()
        self.channels = channels
        self.prior = prior
        shape = (channels,) if learn_threshold == "channel" else ()
        v = torch.full(shape, float(threshold))
        if self.learn_threshold:
            self.threshold = nn.Parameter(v)
        else:
            self.register_buffer("threshold", v)
        self.record = False
        self.last_membrane: torch.Tensor | None = None
        self.reset_stats()

    # -- statistics --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        """Clear the recorded statistics (spike count, neuron-steps, membrane level histogram)."""
        self.stats = {"spikes": 0, "neuron_steps": 0, "level_counts": {}}

    @property
    def spike_rate(self) -> float:
        n = self.stats["neuron_steps"]
        return self.stats["spikes"] / n if n else float("nan")

    @torch.no_grad()
    def _record(self, spikes: torch.Tensor, mem: torch.Tensor | None) -> None:
        self.stats["spikes"] += int(spikes.sum().item())
        self.stats["neuron_steps"] += spikes.numel()
        # stored codes m_t of every step of the last forward (the cost counter reads them)
        self.last_membrane = mem.detach() if mem is not None else None
        if mem is not None and self.membrane is not None:
            levels = torch.arange(self.membrane.lb, self.membrane.ub + 1)
            counts = torch.bincount((mem.to(torch.int64) - self.membrane.lb).flatten(), minlength=len(levels))
            hist = self.stats["level_counts"]
            for level, c in zip(levels.tolist(), counts.tolist()):
                hist[level] = hist.get(level, 0) + c

    # -- threshold ---------------------------------------------------------------------------
    def threshold_for(self, x: torch.Tensor) -> torch.Tensor:
        """V_th shaped to broadcast against one step ``x[t]`` ([B, C, ...])."""
        if self.threshold.dim() == 0:
            return self.threshold
        if x.dim() < 3 or x.shape[2] != self.threshold.shape[0]:
            raise ValueError(
                f"per-channel threshold has {self.threshold.shape[0]} channels, input {tuple(x.shape)} "
                "(expected [T, B, C, ...])"
            )
        return self.threshold.view(-1, *([1] * (x.dim() - 3)))
