"""The per-step kernels of the fused LIF's compiled path, run eagerly (the same code torch.compile
traces) against the reference: forward bit-identical, gradients allclose.

Compiling takes minutes on a small CPU, so the compiled run itself is opt-in:
``SPQUANT_TEST_COMPILE=1 python -m pytest tests/test_fused_kernels.py``.
"""

import itertools
import os

import pytest
import torch

from spquant import ATan, IntegerMembrane, Sigmoid, Triangle
from spquant.neuron import fused, lif_reference
from tests.test_fused import _case


@pytest.fixture
def step_kernels(monkeypatch):
    """Switch the fused LIF onto its per-step kernels without compiling them."""
    monkeypatch.setitem(fused._compile, "enabled", True)
    monkeypatch.setitem(fused._compile, "forward", fused._forward_step)
    monkeypatch.setitem(fused._compile, "backward", fused._backward_step)


CASES = list(
    itertools.product(
        ["fp32", "ternary", "five", "ste"], ["none", "layer", "channel"], ["none", "fixed", "learned"]
    )
)


@pytest.mark.parametrize("membrane,thr,gate_kind", CASES)
def test_step_kernels_match_reference(membrane, thr, gate_kind, step_kernels, one_thread):
    assert fused.kernels_compiled()
    seed = CASES.index((membrane, thr, gate_kind))
    surrogate = [Triangle(), Sigmoid(4.0), ATan(2.0)][seed % 3]
    prior = ["none", "channel", "spatial"][seed % 3]
    _case(
        [1, 3, 5][seed % 3],
        (2, 3, 4, 4),
        membrane,
        surrogate,
        thr,
        gate_kind,
        prior,
        seed % 2 == 0,
        torch.float32,
        seed,
    )


@pytest.mark.parametrize("membrane", ["fp32", "ternary"])
def test_step_kernels_float64_tight(membrane, step_kernels):
    s = _case(
        6, (3, 4, 5, 5), membrane, Sigmoid(4.0), "channel", "learned", "channel", True, torch.float64, 11
    )
    assert 0 < s.mean() < 1


def test_custom_membrane_falls_back_to_the_eager_forward(step_kernels):
    """A membrane quantizer that is not an IntegerMembrane keeps the generic path (still exact)."""

    class Halves(IntegerMembrane):
        def quantize(self, x):
            return torch.floor(x.clamp(self.lb, self.ub) * 2 + 0.5) / 2

    x = torch.randn(4, 2, 3, 5, 5) * 1.5
    q = Halves(-2, 2)
    assert torch.equal(
        fused.lif_fused(x, torch.tensor(1.0), membrane=q), lif_reference(x, torch.tensor(1.0), membrane=q)
    )


def test_compile_switch_round_trip():
    before = fused.kernels_compiled()
    try:
        fused.compile_kernels(True)
        assert fused.kernels_compiled()
        fused.compile_kernels(False)
        assert not fused.kernels_compiled()
    finally:
        fused.compile_kernels(before)


@pytest.mark.skipif(os.environ.get("SPQUANT_TEST_COMPILE") != "1", reason="compiling takes minutes: opt-in")
@pytest.mark.parametrize("membrane,thr", [("fp32", "none"), ("ternary", "layer")])
def test_compiled_kernels_match_reference(membrane, thr, monkeypatch):
    monkeypatch.setitem(fused._compile, "enabled", True)
    _case(4, (4, 8, 6, 6), membrane, Triangle(), thr, "learned", "channel", True, torch.float32, 3)
    _case(3, (2, 8, 6, 6), membrane, Triangle(), thr, "none", "none", False, torch.float32, 4)
