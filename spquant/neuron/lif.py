"""The leaky integrate-and-fire neuron of SpQuant-SNN (docs/method.md#neuron), multi-step.

:func:`lif_step` is the pure one-step update over explicit state; :func:`lif_reference` runs it over a
sequence (the readable oracle); :class:`LIF` is the module (a :class:`~spquant.neuron.base.SpikingNeuron`)
that runs either the reference or the fused kernel of :mod:`spquant.neuron.fused`.
"""

from __future__ import annotations

import torch

from spquant.neuron.base import MembranePriorLike, SpikingNeuron
from spquant.neuron.surrogate import Surrogate, Triangle, spike_with_threshold
from spquant.quant import IntegerMembrane

__all__ = ["LIF", "lif_step", "lif_reference"]


def lif_step(
    m: torch.Tensor,
    current: torch.Tensor,
    threshold: torch.Tensor,
    tau: float,
    surrogate: Surrogate,
    membrane: IntegerMembrane | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One LIF step over explicit state: ``(s_t, m_t)`` from the stored ``m_{t-1}`` and the current.

    .. math::
        u_t = \tau m_{t-1} + I_t,\qquad s_t = H(u_t - V_{th}),\qquad m_t = Q((1 - s_t) u_t)
    """
    u = tau * m + current
    s = spike_with_threshold(u, threshold, surrogate)
    m = (1 - s) * u
    if membrane is not None:
        m = membrane(m)
    return s, m


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
        s, m = lif_step(m, i_t, threshold, tau, surrogate, membrane)
        spikes.append(s)
        if return_membrane:
            mems.append(m)
    out = torch.stack(spikes)
    if return_membrane:
        return out, torch.stack(mems)
    return out


class LIF(SpikingNeuron):
    r"""Multi-step leaky integrate-and-fire neuron with optional integer membrane (docs/method.md#neuron).

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
            ``channels``). Learned with the separate surrogate path of docs/method.md#learnable-threshold.
        membrane: None (FP32) or an ``IntegerMembrane``.
        surrogate: spike surrogate (default ``Triangle()``).
        channels: number of channels (dim 2 of the input), for per-channel thresholds.
        prior: optional membrane-potential prior (see :mod:`spquant.prune`).
        backend: ``'fused'`` (default: one autograd function with a hand-written backward, see
            :mod:`spquant.neuron.fused`; bit-identical forward, same gradients, faster and about half the
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
        super().__init__(tau, threshold, learn_threshold, membrane, surrogate, channels, prior)
        if backend not in ("reference", "fused"):
            raise ValueError(f"LIF backend must be 'reference' or 'fused', got {backend!r}")
        self.backend = backend

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, learn_threshold={self.learn_threshold!r}, surrogate={self.surrogate!r}, "
            f"backend={self.backend!r}"
        )

    def forward(self, current: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        if current.dim() < 2:
            raise ValueError(f"LIF expects [T, B, ...] input, got shape {tuple(current.shape)}")
        v_th = self.threshold_for(current)
        need_mem = self.record and self.membrane is not None
        if self.backend == "fused":
            from spquant.neuron.fused import lif_fused

            out = lif_fused(
                current, v_th, self.tau, self.membrane, self.surrogate, gate, self.prior, need_mem
            )
        else:
            out = lif_reference(
                current, v_th, self.tau, self.membrane, self.surrogate, gate, self.prior, need_mem
            )
        spikes, mem = out if need_mem else (out, None)
        if self.record:
            self._record(spikes, mem)
        return spikes
