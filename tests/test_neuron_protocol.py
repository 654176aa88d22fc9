"""A second neuron model is one class on SpikingNeuron: the layers, pruning statistics and cost
accounting work with it unchanged (what docs/architecture.md promises)."""

import torch

from spquant.cost import measure_cost, static_cost
from spquant.layers import ConvBNLIF
from spquant.neuron import LIF, SpikingNeuron
from spquant.neuron.surrogate import spike_with_threshold
from spquant.prune import MembranePrior, record_prune_stats
from spquant.quant import IntegerMembrane, TernaryWeight


class SoftResetIF(SpikingNeuron):
    """Integrate-and-fire with reset by subtraction: u = m + I, s = H(u - V), m = Q(u - s V)."""

    reset = "subtract"

    def forward(self, current, gate=None):
        v_th = self.threshold_for(current)
        m = torch.zeros_like(current[0])
        spikes, mems = [], []
        for t in range(current.shape[0]):
            i_t = current[t] if gate is None else current[t] * gate[t]
            if self.prior is not None and t > 0:
                keep = self.prior.keep_mask(m, self.membrane)
                if keep is not None:
                    i_t = i_t * keep
            u = self.tau * m + i_t
            s = spike_with_threshold(u, v_th, self.surrogate)
            m = u - s * v_th
            if self.membrane is not None:
                m = self.membrane(m)
            spikes.append(s)
            mems.append(m)
        out = torch.stack(spikes)
        if self.record:
            self._record(out, torch.stack(mems))
        return out


def _net(neuron):
    torch.manual_seed(0)
    return ConvBNLIF(2, 4, weight_quant=TernaryWeight(), neuron=neuron).eval()


def test_second_neuron_runs_in_a_block_and_is_counted_like_lif():
    x = (torch.rand(3, 2, 2, 8, 8) > 0.5).float()
    soft = _net(SoftResetIF(tau=1.0, membrane=IntegerMembrane(), learn_threshold="layer"))
    lif = _net(LIF(membrane=IntegerMembrane()))
    with torch.no_grad():
        y = soft(x)
    assert y.shape == (3, 2, 4, 8, 8) and set(y.unique().tolist()) <= {0.0, 1.0}
    a, b = static_cost(soft, (2, 8, 8)), static_cost(lif, (2, 8, 8))
    assert a.lif_neurons == b.lif_neurons == 4 * 8 * 8
    assert a.membrane_bits == b.membrane_bits
    m = measure_cost(soft, [x])
    assert m.membrane_updates + m.skipped_updates == 3 * 4 * 8 * 8


def test_second_neuron_honours_the_prior_and_records_statistics():
    neuron = SoftResetIF(
        tau=1.0, membrane=IntegerMembrane(), prior=MembranePrior(channel=False, spatial=True)
    )
    net = _net(neuron)
    x = (torch.rand(4, 2, 2, 8, 8) > 0.5).float()
    with record_prune_stats(net) as stats, torch.no_grad():
        net(x)
    assert neuron.stats["neuron_steps"] == 4 * 2 * 4 * 8 * 8
    assert sum(neuron.stats["level_counts"].values()) == neuron.stats["neuron_steps"]
    assert 0.0 <= neuron.spike_rate <= 1.0
    assert stats.layers  # the recorder saw the block


def test_gradient_reaches_the_learnable_threshold_of_the_second_neuron():
    neuron = SoftResetIF(membrane=IntegerMembrane(), learn_threshold="layer")
    current = torch.randn(4, 3, 5, requires_grad=True)
    (neuron(current) * torch.randn(4, 3, 5)).sum().backward()
    assert neuron.threshold.grad is not None and torch.isfinite(neuron.threshold.grad).all()
    assert current.grad is not None
