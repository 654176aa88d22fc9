"""Behaviour of the fused LIF that mutation testing found unchecked: how the compiled kernels are
built, which output is marked as spikes, gradients of gates shared over time or over the batch, and
recording on the fused backend (each against the reference LIF or an explicit expectation)."""

from __future__ import annotations

import pytest
import torch

from spquant import IntegerMembrane
from spquant.neuron import LIF, fused, lif_reference
from spquant.neuron.fused import is_spike_tensor, lif_fused


def test_compiled_kernels_are_the_step_functions_compiled_for_dynamic_shapes(monkeypatch):
    calls = []

    def fake_compile(fn=None, **kw):
        calls.append((fn, kw))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setitem(fused._compile, "forward", None)
    monkeypatch.setitem(fused._compile, "backward", None)
    monkeypatch.setitem(fused._compile, "enabled", True)
    assert fused._kernel("forward") is fused._forward_step
    assert fused._kernel("backward") is fused._backward_step
    assert calls == [(fused._forward_step, {"dynamic": True}), (fused._backward_step, {"dynamic": True})]
    fused._kernel("forward")  # built once, then reused
    assert len(calls) == 2


def test_with_the_membrane_returned_the_spikes_are_marked_and_the_membrane_is_not():
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))
    spikes, mem = lif_fused(x, torch.tensor(0.5), membrane=IntegerMembrane(), return_membrane=True)
    assert is_spike_tensor(spikes)
    assert not is_spike_tensor(mem)  # the membrane holds -1/0/1 codes: never to be saved as bool


@pytest.mark.parametrize(
    "gate_shape", [(1, 3, 4, 1, 1), (5, 1, 4, 1, 1)], ids=["shared-over-T", "batch-of-one"]
)
def test_gate_gradient_of_a_gate_shared_over_time_or_a_batch_of_one(gate_shape):
    g = torch.Generator().manual_seed(1)
    T, B = 5, gate_shape[1] if gate_shape[0] == 1 else 1
    x = torch.randn(T, B, 4, 3, 3, generator=g, dtype=torch.float64)
    gate0 = torch.rand(gate_shape, generator=g, dtype=torch.float64)
    grad_out = torch.randn(T, B, 4, 3, 3, generator=g, dtype=torch.float64)
    grads = []
    for fn in (lif_fused, lif_reference):
        xi = x.clone().requires_grad_(True)
        gi = gate0.clone().requires_grad_(True)
        out = fn(xi, torch.tensor(0.3, dtype=torch.float64), membrane=IntegerMembrane(), gate=gi)
        (out * grad_out).sum().backward()
        grads.append((out.detach(), xi.grad, gi.grad))
    (o1, dx1, dg1), (o2, dx2, dg2) = grads
    assert torch.equal(o1, o2)
    assert dg1.shape == gate_shape and dg1.abs().sum() > 0
    torch.testing.assert_close(dg1, dg2)
    torch.testing.assert_close(dx1, dx2)


def test_recording_on_the_fused_backend_equals_the_reference():
    x = torch.randn(4, 3, 5, 2, 2, generator=torch.Generator().manual_seed(2))
    stats = []
    for backend in ("fused", "reference"):
        lif = LIF(threshold=0.4, membrane=IntegerMembrane(), backend=backend)
        lif.record = True
        spikes = lif(x)
        stats.append((spikes, lif.last_membrane, dict(lif.stats["level_counts"]), lif.stats["spikes"]))
    (s1, m1, h1, n1), (s2, m2, h2, n2) = stats
    assert m1 is not None and m1.shape == x.shape
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert h1 == h2 and sum(h1.values()) == x.numel() and n1 == n2


def test_surrogates_hash_by_type_and_parameters():
    """Surrogates are compared and hashed by value (they key cached kernels and compile guards)."""
    from spquant.neuron.surrogate import ATan, Sigmoid, Triangle

    table = {Triangle(): "t", Sigmoid(4.0): "s4", ATan(2.0): "a2"}
    assert table[Triangle()] == "t" and table[Sigmoid(4.0)] == "s4" and table[ATan(2.0)] == "a2"
    assert hash(Sigmoid(4.0)) == hash(Sigmoid(4.0)) and Sigmoid(4.0) != Sigmoid(5.0)
    assert Sigmoid(5.0) not in table
