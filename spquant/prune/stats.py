"""Recording what the gates and priors kept, per layer and time step (feeds statistics and cost)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from spquant.prune.gate import ChannelGate
from spquant.prune.prior import MembranePrior

__all__ = ["LayerRecord", "GateRecorder", "PruneStats", "record_prune_stats", "collect_prune_stats"]


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
    Works with any LIF backend that honours the prior contract (``keep_mask`` or ``split_keep`` called
    once per t > 0).
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
        from spquant.neuron import SpikingNeuron

        self.model = model
        self.layers: dict[str, dict] = {}
        self._lifs = {n: m for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}

    def __call__(self, name: str, rec: LayerRecord):
        T = rec.keep.shape[0]
        d = self.layers.setdefault(name, {"steps": {}})
        for t in range(T):
            s = d["steps"].setdefault(
                t,
                {
                    "n_channels": 0,
                    "active_channels": 0,
                    "gate_on": 0,
                    "prior_channel_skip": 0,
                    "neurons": 0,
                    "kept": 0,
                    "spatial_skip": 0,
                },
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

            def tot(key, steps=steps):
                return sum(s[key] for s in steps)

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
    from spquant.neuron import SpikingNeuron

    stats = PruneStats(model)
    lifs = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
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
