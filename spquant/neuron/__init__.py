"""Spiking neurons: the base every neuron model builds on, LIF, its fused kernel, spike surrogates.

* :mod:`spquant.neuron.base`: :class:`SpikingNeuron` (threshold, membrane grid, surrogate, reset,
  leak, statistics): what cost, prune, deploy and the trainer rely on;
* :mod:`spquant.neuron.lif`: :class:`LIF`, its pure step :func:`lif_step` and the readable
  sequence oracle :func:`lif_reference`;
* :mod:`spquant.neuron.fused`: the LIF recurrence as one autograd function with a hand-written
  backward (the default backend);
* :mod:`spquant.neuron.surrogate`: spike surrogates (Triangle, Sigmoid, ATan) and the spike with
  a learnable threshold.

A second neuron model is one new file here (a ``SpikingNeuron`` subclass with its step function)
plus its tests; see ``docs/architecture.md``.
"""

from spquant.neuron.base import MembranePriorLike, SpikingNeuron
from spquant.neuron.lif import LIF, lif_reference, lif_step

__all__ = ["LIF", "MembranePriorLike", "SpikingNeuron", "lif_reference", "lif_step"]
