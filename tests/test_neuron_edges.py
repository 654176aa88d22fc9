"""Neuron behaviour at the edges the main tests do not reach: the spike step at exactly zero, the
surrogates' documented defaults and their refusals, a threshold above the membrane's top level in
the fused kernel, an IntegerMembrane subclass through the fused kernel, and the prior a LIF keeps."""

from __future__ import annotations

import pytest
import torch

from spquant import LIF, IntegerMembrane, Sigmoid, Triangle
from spquant.neuron import lif_reference
from spquant.neuron.fused import lif_fused
from spquant.neuron.surrogate import heaviside


def test_heaviside_is_zero_at_exactly_zero():
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    assert heaviside(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert heaviside(x).dtype == x.dtype


def test_surrogate_defaults_and_refusals():
    assert Triangle().gamma == 1.0
    assert Sigmoid().alpha == 4.0
    # Triangle at x = 0.5 with gamma 1: (1 - 0.5) / 1 = 0.5; Sigmoid at 0 with alpha 4: 4 * 0.25 = 1
    assert Triangle().derivative(torch.tensor(0.5)).item() == pytest.approx(0.5)
    assert Sigmoid().derivative(torch.tensor(0.0)).item() == pytest.approx(1.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="gamma > 0"):
            Triangle(bad)
        with pytest.raises(ValueError, match="alpha > 0"):
            Sigmoid(bad)


def _hand_lif(current, v_th, tau, lb, ub):
    """Integer-membrane LIF written out: u = tau m + I, spike iff u > V, m = clamp(round(reset u))."""
    m = torch.zeros_like(current[0])
    spikes, mems = [], []
    for t in range(current.shape[0]):
        u = tau * m + current[t]
        s = (u > v_th).to(current.dtype)
        m = torch.floor(((1 - s) * u).clamp(lb, ub) + 0.5)
        spikes.append(s)
        mems.append(m)
    return torch.stack(spikes), torch.stack(mems)


@pytest.mark.parametrize("fn", [lif_fused, lif_reference], ids=["fused", "reference"])
def test_threshold_above_the_top_level_clamps_the_stored_state(fn):
    """V = 2.5 > ub = 1: a potential in (1, 2.5] does not spike and must be stored as 1, not kept."""
    current = torch.tensor([[2.0, 1.4, -3.0, 0.3], [0.0, 1.2, 0.0, 2.4], [0.6, 0.0, 2.0, 0.0]])
    current = current.reshape(3, 1, 4)
    th = torch.tensor(2.5)
    s, m = fn(current, th, 0.5, IntegerMembrane(), None, None, None, True)
    s_hand, m_hand = _hand_lif(current, 2.5, 0.5, -1, 1)
    assert torch.equal(s, s_hand) and torch.equal(m, m_hand)
    assert m.max() == 1 and m.min() == -1
    # 2.0 is stored as 1 (clamped), so t=1 sees 0.5 * 1 + 0 = 0.5 -> stored round(0.5) = 1
    assert m[:, 0, 0].tolist() == [1.0, 1.0, 1.0]


class _HalfStepMembrane(IntegerMembrane):
    """A user's membrane quantizer: the integer levels of IntegerMembrane with its own rounding."""

    def quantize(self, r):
        return torch.floor(r.clamp(self.lb, self.ub) + 0.5)


def test_fused_kernel_uses_a_subclass_quantizer_like_the_reference():
    g = torch.Generator().manual_seed(7)
    current = torch.randn(5, 2, 3, 4, generator=g) * 1.5
    th = torch.tensor(0.8)
    membrane = _HalfStepMembrane()
    s_f, m_f = lif_fused(current, th, 0.5, membrane, None, None, None, True)
    s_r, m_r = lif_reference(current, th, 0.5, membrane, None, None, None, True)
    s_hand, m_hand = _hand_lif(current, 0.8, 0.5, -1, 1)
    assert torch.equal(s_f, s_hand) and torch.equal(m_f, m_hand)
    assert torch.equal(s_r, s_hand) and torch.equal(m_r, m_hand)


def test_lif_keeps_the_prior_it_is_given():
    class SkipAll:
        def keep_mask(self, m_prev, membrane):
            return torch.zeros_like(m_prev)

    prior = SkipAll()
    lif = LIF(membrane=IntegerMembrane(), prior=prior)
    assert lif.prior is prior
    x = torch.full((3, 1, 2), 0.7)  # below the threshold 1: the state carries over unless skipped
    with torch.no_grad():
        out = lif(x)
    # t=0: u = 0.7, stored 1; t=1: prior skips the current, u = 0.5 -> stored round(0.5) = 1, no spike
    assert out.sum() == 0
    lif_no_prior = LIF(membrane=IntegerMembrane())
    with torch.no_grad():
        assert lif_no_prior(x).sum() > 0  # without the prior: 0.5 + 0.7 = 1.2 > 1 spikes at t=1
