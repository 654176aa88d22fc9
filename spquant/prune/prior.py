"""The membrane-potential prior: skips neurons at t > 0 from the stored membrane m_{t-1}."""

from __future__ import annotations

import torch

from spquant.prune.options import resolve_prune_options

__all__ = ["MembranePrior", "build_prior"]


class MembranePrior:
    """Membrane-potential prior (docs/method.md#membrane-prior): skips neurons at t > 0 from the stored
    m_{t-1}.

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

    @torch.no_grad()
    def split_keep(self, m_prev: torch.Tensor, membrane=None, out: torch.Tensor | None = None):
        """:meth:`keep_mask`'s decision in the form the fused LIF applies cheaply (it calls this
        instead of ``keep_mask`` when the prior has it; recorded the same way).

        Returns ``(channel_keep, spatial_keep)``, ``keep_mask == channel_keep & spatial_keep``: the
        channel part as bool ``[B, C, 1, ...]`` (the kernel folds it into the per-channel gate), the
        spatial part as 0./1. in ``m_prev``'s dtype (float compares and multiplies are several times
        faster than bool ones on CPUs), written into ``out`` when given; None for a part that is off.
        ``NotImplemented`` for a subclass that overrides :meth:`keep_mask` or :meth:`masks` (its
        decision is only known through ``keep_mask``)."""
        cls = type(self)
        if cls.keep_mask is not MembranePrior.keep_mask or cls.masks is not MembranePrior.masks:
            return NotImplemented
        ch = sp = None
        if self.channel and m_prev.dim() >= 3:
            dims = tuple(range(2, m_prev.dim()))
            ch = m_prev.mean(dim=dims, keepdim=True) >= self.channel_threshold
        if self.spatial:
            sp = torch.gt(m_prev, self.level_for(membrane), out=out)
            if out is None:
                sp = sp.to(m_prev.dtype)
        if self.record:
            self.records.append((ch, None if sp is None else sp.to(torch.bool)))
        return ch, sp

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
