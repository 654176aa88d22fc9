"""The fused LIF's in-kernel membrane prior (``MembranePrior.split_keep``: the channel part folded into
the gate, the spatial part a float mask, the gate multiplied inside the add) against the path it
replaces (the prior's ``keep_mask`` float mask, multiplied in separate passes) and the reference:
spikes and membranes bit-identical, gradients allclose."""

import itertools
import os

import pytest
import torch

from spquant import IntegerMembrane
from spquant.models import VGG9, QuantSpec
from spquant.neuron import fused, lif_reference
from spquant.neuron.fused import lif_fused
from spquant.prune import MembranePrior, channel_importance


class KeepMaskOnly:
    """The same prior seen only through ``keep_mask``: the fused LIF's generic (previous) path."""

    def __init__(self, prior):
        self.prior = prior

    def keep_mask(self, m_prev, membrane):
        return self.prior.keep_mask(m_prev, membrane)


MEMBRANES = {"fp32": None, "ternary": IntegerMembrane(), "five": IntegerMembrane(-3, 1)}
PRIORS = {
    "both": dict(),
    "channel": dict(spatial=False),
    "spatial": dict(channel=False),
    "levels": dict(channel_threshold=-0.3, spatial_level=0.0),
}
GATES = ["none", "fixed", "learned", "shared", "spatial", "soft"]


def _gate(kind, T, shape, g, dtype):
    B, C = shape[:2]
    rest = [1] * (len(shape) - 2)
    if kind == "none":
        return None
    if kind == "shared":  # one gate for every step and sample: summed over B for its gradient
        gate = (torch.rand(1, 1, C, *rest, generator=g) > 0.3).to(dtype)
    elif kind == "spatial":  # full-size gate (channel x spatial gate)
        gate = (torch.rand(T, *shape, generator=g) > 0.3).to(dtype)
    elif kind == "soft":  # not {0, 1}: I * g rounds
        gate = torch.rand(T, B, C, *rest, generator=g, dtype=dtype) + 0.25
    else:
        gate = (torch.rand(T, B, C, *rest, generator=g) > 0.3).to(dtype)
    return gate.requires_grad_(kind != "fixed")


def _run(fn, prior, current, th, gate, membrane, ret, gs, gm):
    for t in (current, th, gate):
        if t is not None:
            t.grad = None
    out = fn(current, th, 0.5, membrane, None, gate, prior, ret)
    s, m = out if ret else (out, None)
    loss = (s * gs).sum() + (0 if m is None else (m * gm).sum())
    loss.backward()
    grads = [None if t is None or not t.requires_grad else t.grad.clone() for t in (current, th, gate)]
    return s.detach(), None if m is None else m.detach(), grads


def _compare(T, shape, membrane, prior_kw, gate_kind, ret, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    current = (torch.randn(T, *shape, generator=g, dtype=dtype) * 1.3 + 0.1).requires_grad_()
    th = torch.tensor(0.9, dtype=dtype).requires_grad_()
    gate = _gate(gate_kind, T, shape, g, dtype)
    gs = torch.randn(T, *shape, generator=g, dtype=dtype)
    gm = torch.randn(T, *shape, generator=g, dtype=dtype)
    mem = MEMBRANES[membrane]
    runs = {}
    for name, fn, wrap in (
        ("split", lif_fused, lambda p: p),
        ("keep_mask", lif_fused, KeepMaskOnly),
        ("reference", lif_reference, lambda p: p),
    ):
        prior = MembranePrior(**prior_kw)
        prior.record = True
        runs[name] = _run(fn, wrap(prior), current, th, gate, mem, ret, gs, gm) + (prior.records,)
    s_ref, m_ref, g_ref, rec_ref = runs["reference"]
    assert len(rec_ref) == T - 1
    for name in ("split", "keep_mask"):
        s, m, grads, rec = runs[name]
        assert torch.equal(s, s_ref), f"{name}: spikes differ"
        if ret:
            assert torch.equal(m, m_ref), f"{name}: membrane differs"
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        for what, a, b in zip(("current", "threshold", "gate"), g_ref, grads):
            assert (a is None) == (b is None), what
            if a is not None:
                assert torch.allclose(a, b, **tol), f"{name}: {what} grad differs by {(a - b).abs().max()}"
        assert len(rec) == len(rec_ref)
        for (c1, p1), (c2, p2) in zip(rec, rec_ref):
            for x, y in ((c1, c2), (p1, p2)):
                assert (x is None) == (y is None) and (
                    x is None or (x.dtype == y.dtype and torch.equal(x, y))
                )
    return s_ref


CASES = list(itertools.product(MEMBRANES, PRIORS, GATES))


@pytest.mark.parametrize("membrane,prior,gate_kind", CASES)
def test_split_prior_equals_keep_mask_path_and_reference(membrane, prior, gate_kind, one_thread):
    i = CASES.index((membrane, prior, gate_kind))
    shape = [(2, 3, 4, 4), (3, 4, 2, 5), (2, 3, 6)][i % 3]
    s = _compare([2, 3, 5][i % 3], shape, membrane, PRIORS[prior], gate_kind, i % 2 == 0, seed=i)
    assert 0 < s.mean() < 1


@pytest.mark.parametrize("gate_kind", ["none", "learned", "shared"])
def test_split_prior_float64_tight(gate_kind):
    _compare(6, (3, 4, 5, 5), "ternary", {}, gate_kind, True, seed=7, dtype=torch.float64)


@pytest.fixture
def step_kernels(monkeypatch):
    """The compiled path's per-step kernels, run without compiling."""
    monkeypatch.setitem(fused._compile, "enabled", True)
    monkeypatch.setitem(fused._compile, "forward", fused._forward_step)
    monkeypatch.setitem(fused._compile, "backward", fused._backward_step)


@pytest.mark.parametrize("membrane,prior,gate_kind", CASES[::5])
def test_split_prior_with_step_kernels(membrane, prior, gate_kind, step_kernels, one_thread):
    i = CASES.index((membrane, prior, gate_kind))
    _compare(4, (2, 3, 4, 4), membrane, PRIORS[prior], gate_kind, True, seed=100 + i)


def test_fused_lif_takes_the_split_path():
    prior = MembranePrior()
    prior.keep_mask = None  # an instance attribute: split_keep still applies, keep_mask must not be called
    x = torch.randn(4, 2, 3, 4, 4) * 2
    s = lif_fused(x, torch.tensor(1.0), membrane=IntegerMembrane(), prior=prior)
    assert torch.equal(
        s, lif_reference(x, torch.tensor(1.0), membrane=IntegerMembrane(), prior=MembranePrior())
    )


def test_subclass_overriding_keep_mask_is_honoured():
    class SkipAll(MembranePrior):
        def keep_mask(self, m_prev, membrane):
            return torch.zeros_like(m_prev)

    prior = SkipAll()
    assert prior.split_keep(torch.zeros(2, 3, 4, 4)) is NotImplemented
    x = torch.full((3, 1, 2, 2, 2), 1.5, requires_grad=True)
    s = lif_fused(x, torch.tensor(1.0), prior=prior)
    assert s[0].eq(1).all() and s[1:].eq(0).all()
    s.sum().backward()
    assert x.grad[1:].eq(0).all() and x.grad[0].ne(0).any()


def test_split_keep_is_keep_mask():
    g = torch.Generator().manual_seed(5)
    m = torch.randint(-1, 2, (3, 4, 5, 5), generator=g).float()
    m[0, 1] = -1.0  # a channel the channel prior skips
    for kw in PRIORS.values():
        prior = MembranePrior(**kw)
        ch, sp = prior.split_keep(m, IntegerMembrane())
        keep = torch.ones_like(m, dtype=torch.bool)
        keep = keep if ch is None else keep & ch
        keep = keep if sp is None else keep & sp.bool()
        assert sp is None or sp.dtype == m.dtype
        assert ch is None or (ch.dtype == torch.bool and ch.shape == (3, 4, 1, 1))
        assert torch.equal(keep.to(m.dtype).expand_as(m), prior.keep_mask(m, IntegerMembrane()).expand_as(m))
        out = torch.empty_like(m)
        ch2, sp2 = prior.split_keep(m, IntegerMembrane(), out=out)
        assert sp2 is None or (sp2 is out and torch.equal(sp2, sp))
    assert not MembranePrior().split_keep(m, None)[0][0, 1].any()


def test_max_abs_importance_is_max_of_abs():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(2, 3, 4, 5, 5, generator=g)
    c[0, 0, 0] = -c[0, 0, 0].abs() - 1  # an all-negative map: its importance comes from the minimum
    assert torch.equal(channel_importance(c, "max_abs"), c.abs().amax(dim=(3, 4)))


def _vgg_step(wrap_priors, backend="fused"):
    torch.manual_seed(0)
    net = VGG9(
        5,
        in_channels=2,
        input_size=(16, 16),
        plan=(8, "A", 16, "A"),
        spec=QuantSpec("spquant", backend=backend),
    )
    lifs = net.lif_layers()
    assert sum(m.prior is not None for m in lifs) >= 2
    if wrap_priors:
        for m in lifs:
            if m.prior is not None:
                m.prior = KeepMaskOnly(m.prior)
    net.train()
    torch.manual_seed(3)
    x = (torch.rand(4, 3, 2, 16, 16) < 0.35).float()
    from spquant.prune import gate_loss

    out = net(x)
    loss = torch.nn.functional.cross_entropy(out.mean(0), torch.tensor([1, 4, 0])) + gate_loss(net)
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kernels", ["eager", "step_kernels"])
def test_gated_prior_model_split_equals_keep_mask_path(kernels, monkeypatch, one_thread):
    """A SpQuant model with learned gates and membrane priors: one training step on the split path, on
    the keep_mask path and on the reference LIF: outputs bit-identical, every gradient allclose."""
    if kernels == "step_kernels":
        monkeypatch.setitem(fused._compile, "enabled", True)
        monkeypatch.setitem(fused._compile, "forward", fused._forward_step)
        monkeypatch.setitem(fused._compile, "backward", fused._backward_step)
    out_new, g_new = _vgg_step(False)
    out_old, g_old = _vgg_step(True)
    out_ref, g_ref = _vgg_step(False, backend="reference")
    assert torch.equal(out_new, out_old) and torch.equal(out_new, out_ref)
    assert g_new.keys() == g_old.keys() == g_ref.keys()
    assert any("gate" in n for n in g_new), "the gate predictors get a gradient"
    for name in g_ref:
        assert torch.allclose(g_new[name], g_old[name], rtol=1e-4, atol=1e-6), name
        assert torch.allclose(g_new[name], g_ref[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("prior", ["both", "channel"])
def test_soft_gate_rounds_like_the_reference(prior):
    """A gate outside {0, 1}: I * g rounds, so it must not go into a fused multiply-add (which would
    change the FP32 membrane in its last bits)."""
    _compare(3, (4, 8, 6, 6), "fp32", PRIORS[prior], "soft", True, seed=1)


@pytest.mark.skipif(os.environ.get("SPQUANT_TEST_COMPILE") != "1", reason="compiling takes minutes: opt-in")
@pytest.mark.parametrize("gate_kind", ["learned", "shared"])
def test_split_prior_with_compiled_kernels(gate_kind, monkeypatch):
    monkeypatch.setitem(fused._compile, "enabled", True)
    monkeypatch.setitem(fused._compile, "forward", None)
    monkeypatch.setitem(fused._compile, "backward", None)
    _compare(4, (4, 8, 6, 6), "ternary", {}, gate_kind, True, seed=3)
