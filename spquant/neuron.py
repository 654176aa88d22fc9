"""The leaky integrate-and-fire neuron of SpQuant-SNN (SPEC §2-4), multi-step."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from spquant.quant import IntegerMembrane
from spquant.surrogate import Surrogate, Triangle, spike_with_threshold

__all__ = ["LIF", "lif_reference", "MembranePriorLike"]


class MembranePriorLike(Protocol):
    """Decides, from the stored membrane m_{t-1}, which neurons are skipped at step t."""

    def keep_mask(self, m_prev: torch.Tensor, membrane: IntegerMembrane | None) -> torch.Tensor | None:
        """A {0,1} mask broadcastable to m_prev (1 = update), or None for 'keep all'."""


def lif_reference(
    current: torch.Tensor,
    threshold: torch.Tensor,
    tau: float = 0.5,
    membrane: IntegerMembrane | None = None,
    surrogate: Surrogate | None = None,
    gate: torch.Tensor | None = None,
    prior: MembranePriorLike | None = None,
    return_membrane: bool = False,
):
    r"""The LIF recurrence over a whole sequence, written for clarity (the readable oracle).

    .. math::
        I_t &= I_t \cdot g_t \\
        u_t &= \tau m_{t-1} + I_t, \qquad m_0 = 0 \\
        s_t &= H(u_t - V_{th}) \\
        m_t &= Q((1 - s_t) u_t)

    ``current``: [T, B, ...]; ``threshold``: a tensor broadcastable to one step ([], or [C, 1, ..]);
    ``gate``: optional {0,1} tensor with the same number of dims as ``current``, broadcastable to it
    (leading dim T or 1), e.g. [T, B, C, 1, 1] for a channel gate;
    ``prior``: optional membrane prior: at t > 0 neurons it rejects from m_{t-1} get no current.
    Returns spikes [T, B, ...] (and the stored membrane m_t for every t if ``return_membrane``).
    """
    surrogate = surrogate or Triangle()
    m = torch.zeros_like(current[0])
    spikes, mems = [], []
    for t in range(current.shape[0]):
        i_t = current[t]
        if gate is not None:
            i_t = i_t * gate[t if gate.shape[0] > 1 else 0]
        if prior is not None and t > 0:
            keep = prior.keep_mask(m, membrane)
            if keep is not None:
                i_t = i_t * keep
        u = tau * m + i_t
        s = spike_with_threshold(u, threshold, surrogate)
        m = (1 - s) * u
        if membrane is not None:
            m = membrane(m)
        spikes.append(s)
        if return_membrane:
            mems.append(m)
    out = torch.stack(spikes)
    if return_membrane:
        return out, torch.stack(mems)
    return out


class LIF(nn.Module):
    r"""Multi-step leaky integrate-and-fire neuron with optional integer membrane (SPEC §2-4).

    .. math::
        u_t = \tau\, m_{t-1} + I_t,\quad s_t = H(u_t - V_{th}),\quad m_t = Q((1 - s_t)\,u_t),\quad m_0 = 0

    The spike is decided on the unquantized ``u_t``; the reset is hard (to 0); only ``m_t`` (an
    integer code when ``membrane`` is an :class:`~spquant.quant.IntegerMembrane`) is stored between
    steps. ``membrane=None`` is the FP32 baseline (Q = identity).

    Input ``[T, B, ...]`` (time-major, any T, any trailing shape); output spikes of the same shape.
    State lives only inside one forward call, so there is nothing to reset between batches.

    Args:
        tau: leak factor (0.5 = a right shift by one in integer form).
        threshold: initial V_th.
        learn_threshold: False, ``'layer'`` (one scalar) or ``'channel'`` (one per channel; needs
            ``channels``). Learned with the separate surrogate path of SPEC §4.
        membrane: None (FP32) or an ``IntegerMembrane``.
        surrogate: spike surrogate (default ``Triangle()``).
        channels: number of channels (dim 2 of the input), for per-channel thresholds.
        prior: optional membrane-potential prior (see :mod:`spquant.prune`).
        backend: ``'fused'`` (default: one autograd function with a hand-written backward, see
            :mod:`spquant.fused`; bit-identical forward, same gradients, faster and about half the
            memory) or ``'reference'`` (autograd through the readable loop :func:`lif_reference`).

    Example::

        >>> import torch
        >>> from spquant import LIF, IntegerMembrane
        >>> lif = LIF(membrane=IntegerMembrane(), learn_threshold="layer")
        >>> x = torch.tensor([[0.6], [0.6], [1.5]])       # T=3, one neuron
        >>> lif(x).flatten().tolist()                     # m: 1 -> u=1.1 spikes -> reset
        [0.0, 1.0, 1.0]
    """

    def __init__(
        self,
        tau: float = 0.5,
        threshold: float = 1.0,
        learn_threshold: bool | str = False,
        membrane: IntegerMembrane | None = None,
        surrogate: Surrogate | None = None,
        channels: int | None = None,
        prior: MembranePriorLike | None = None,
        backend: str = "fused",
    ):
        super().__init__()
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"LIF tau must be in [0, 1], got {tau}")
        if learn_threshold not in (False, None, "layer", "channel", True):
            raise ValueError(f"learn_threshold must be False, 'layer' or 'channel', got {learn_threshold!r}")
        if learn_threshold is True:
            learn_threshold = "layer"
        if learn_threshold == "channel" and not channels:
            raise ValueError("learn_threshold='channel' needs channels=C")
        if backend not in ("reference", "fused"):
            raise ValueError(f"LIF backend must be 'reference' or 'fused', got {backend!r}")
        self.tau = float(tau)
        self.learn_threshold = learn_threshold or False
        self.membrane = membrane
        self.surrogate = surrogate or Triangle()
        self.channels = channels
        self.prior = prior
        self.backend = backend
        shape = (channels,) if learn_threshold == "channel" else ()
        v = torch.full(shape, float(threshold))
        if self.learn_threshold:
            self.threshold = nn.Parameter(v)
        else:
            self.register_buffer("threshold", v)
        self.record = False
        self.reset_stats()

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, learn_threshold={self.learn_threshold!r}, surrogate={self.surrogate!r}, "
            f"backend={self.backend!r}"
        )

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
        if mem is not None and self.membrane is not None:
            levels = torch.arange(self.membrane.lb, self.membrane.ub + 1)
            counts = torch.bincount((mem.to(torch.int64) - self.membrane.lb).flatten(), minlength=len(levels))
            hist = self.stats["level_counts"]
            for level, c in zip(levels.tolist(), counts.tolist()):
                hist[level] = hist.get(level, 0) + c

    # -- forward -----------------------------------------------------------------------------
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

    def forward(self, current: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        if current.dim() < 2:
            raise ValueError(f"LIF expects [T, B, ...] input, got shape {tuple(current.shape)}")
        v_th = self.threshold_for(current)
        need_mem = self.record and self.membrane is not None
        if self.backend == "fused":
            from spquant.fused import lif_fused

            out = lif_fused(current, v_th, self.tau, self.membrane, self.surrogate, gate, self.prior, need_mem)
        else:
            out = lif_reference(current, v_th, self.tau, self.membrane, self.surrogate, gate, self.prior, need_mem)
        spikes, mem = out if need_mem else (out, None)
        if self.record:
            self._record(spikes, mem)
        return spikes
