import copy
import io
import math

import pytest
import torch

from spquant import LIF, ATan, ConvBNLIF, IntegerMembrane, SeqModule, Sigmoid, TernaryWeight, Triangle


def manual_lif(current, v_th, tau, q, surr, grad_spikes):
    """Hand-written forward and BPTT backward of the LIF (no autograd).

    Returns spikes, dL/dI, dL/dV_th for the loss L = sum(grad_spikes * spikes)."""
    T = current.shape[0]
    m = torch.zeros_like(current[0])
    us, ss, rs = [], [], []
    for t in range(T):
        u = tau * m + current[t]
        s = (u - v_th > 0).to(current.dtype)
        r = (1 - s) * u
        m = q.quantize(r) if q is not None else r
        us.append(u), ss.append(s), rs.append(r)
    d_current = torch.zeros_like(current)
    d_v = torch.zeros(())
    dm = torch.zeros_like(current[0])
    for t in reversed(range(T)):
        u, s, r = us[t], ss[t], rs[t]
        dr = dm * (q.derivative(r) if q is not None else 1.0)
        ds = grad_spikes[t] + dr * (-u)
        x = u - v_th
        dx = ds * surr.derivative(x)
        du = dr * (1 - s) + dx
        d_v = d_v - (dx * (1 + torch.sigmoid(x) * (x >= 0).to(x.dtype))).sum()
        d_current[t] = du
        dm = tau * du
    return torch.stack(ss), d_current, d_v


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 3, 4, 4), (4, 2, 3, 5, 6)])
@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("membrane", [None, "ternary", "five"])
@pytest.mark.parametrize("surrogate", [Triangle(), Sigmoid(4.0), ATan(2.0)])
def test_lif_matches_hand_written_recurrence(shape, T, membrane, surrogate):
    torch.manual_seed(T * 100 + len(shape))
    q = {None: None, "ternary": IntegerMembrane(), "five": IntegerMembrane(-3, 1)}[membrane]
    current = (torch.randn(T, *shape, dtype=torch.float64) * 1.2).requires_grad_()
    grad_spikes = torch.randn(T, *shape, dtype=torch.float64)
    lif = LIF(membrane=q, surrogate=surrogate, learn_threshold="layer").double()
    spikes = lif(current)
    (spikes * grad_spikes).sum().backward()
    ref_s, ref_dI, ref_dv = manual_lif(
        current.detach(), torch.tensor(1.0, dtype=torch.float64), 0.5, q, surrogate, grad_spikes
    )
    assert torch.equal(spikes.detach(), ref_s)
    assert torch.allclose(current.grad, ref_dI, rtol=1e-10, atol=1e-12)
    assert torch.allclose(lif.threshold.grad, ref_dv, rtol=1e-10, atol=1e-12)


def test_threshold_gradient_is_separate_surrogate_path():
    """dL/dV_th = -sum(dL/dx * (1 + sigmoid(x) * 1[x >= 0])), with dL/dx captured by a hook in the
    reference's spike backward; the fused kernel (which computes the triangle case in place) agrees."""
    torch.manual_seed(3)
    for trial in range(5):
        current = torch.randn(5, 4, 6) * 1.5
        grad_out = torch.randn(5, 4, 6)
        captured = []

        from spquant.neuron import surrogate as surrogate_module

        original = surrogate_module.spike_backward

        def spy(x, grad_s, surrogate, v_th_shape=None, captured=captured, original=original):
            captured.append((x.clone(), grad_s * surrogate.derivative(x)))
            return original(x, grad_s, surrogate, v_th_shape)

        grads = {}
        for backend in ("reference", "fused"):
            lif = LIF(
                learn_threshold="layer",
                membrane=IntegerMembrane(),
                threshold=0.8 + 0.1 * trial,
                backend=backend,
            )
            surrogate_module.spike_backward = spy if backend == "reference" else original
            try:
                (lif(current) * grad_out).sum().backward()
            finally:
                surrogate_module.spike_backward = original
            grads[backend] = lif.threshold.grad
        expect = sum(-(dx * (1 + torch.sigmoid(x) * (x >= 0).float())).sum() for x, dx in captured)
        assert len(captured) == 5
        for backend, g in grads.items():
            assert torch.allclose(g, expect, rtol=1e-5, atol=1e-6), backend


def test_per_channel_threshold_gradient_matches_per_channel_sums():
    torch.manual_seed(4)
    C = 3
    lif = LIF(learn_threshold="channel", channels=C, membrane=IntegerMembrane()).double()
    current = torch.randn(4, 2, C, 5, 5, dtype=torch.float64)
    g = torch.randn_like(current)
    (lif(current) * g).sum().backward()
    for c in range(C):
        single = LIF(learn_threshold="layer", membrane=IntegerMembrane()).double()
        (single(current[:, :, c]) * g[:, :, c]).sum().backward()
        assert torch.allclose(lif.threshold.grad[c], single.threshold.grad)
    with pytest.raises(ValueError, match="channels"):
        LIF(learn_threshold="channel")
    with pytest.raises(ValueError, match="per-channel threshold"):
        lif(torch.randn(4, 2, C + 1, 5, 5, dtype=torch.float64))


def test_spike_decided_on_unquantized_potential_and_hard_reset():
    lif = LIF(membrane=IntegerMembrane(), threshold=1.0)
    # u = 1.2 spikes although Q(1.2) = 1 would not exceed the threshold; then the reset gives m = 0
    s = lif(torch.tensor([[1.2], [0.6]]))
    assert s.flatten().tolist() == [1.0, 0.0]
    # stored membrane is quantized: 0.6 -> 1, next u = 0.5 + 0.6 = 1.1 > 1 spikes
    assert lif(torch.tensor([[0.6], [0.6]])).flatten().tolist() == [0.0, 1.0]
    # without quantization 0.6 leaks to 0.3, 0.3 + 0.6 = 0.9 does not spike
    assert LIF()(torch.tensor([[0.6], [0.6]])).flatten().tolist() == [0.0, 0.0]


def _small_net():
    return torch.nn.Sequential(
        ConvBNLIF(
            2,
            4,
            weight_quant=TernaryWeight(),
            neuron=LIF(membrane=IntegerMembrane(), learn_threshold="layer"),
        ),
        SeqModule(torch.nn.AvgPool2d(2)),
        ConvBNLIF(4, 4, neuron=LIF(surrogate=Sigmoid())),
        SeqModule(torch.nn.Flatten()),
    )


def test_calling_twice_gives_identical_output():
    torch.manual_seed(0)
    net = _small_net().eval()
    x = torch.rand(5, 3, 2, 8, 8)
    a, b = net(x), net(x)
    assert torch.equal(a, b)
    net(torch.rand(5, 7, 2, 8, 8))  # a different batch size in between changes nothing
    assert torch.equal(net(x), a)


def test_torch_save_and_deepcopy_whole_model():
    torch.manual_seed(0)
    net = _small_net().eval()
    x = torch.rand(3, 2, 2, 8, 8)
    y = net(x)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), y)
    assert torch.equal(copy.deepcopy(net)(x), y)


def test_recording_statistics_never_changes_result():
    torch.manual_seed(1)
    lif = LIF(membrane=IntegerMembrane(-3, 1))
    x = torch.randn(6, 4, 10) * 2
    plain = lif(x)
    lif.record = True
    recorded = lif(x)
    assert torch.equal(plain, recorded)
    assert lif.stats["spikes"] == int(plain.sum())
    assert lif.stats["neuron_steps"] == plain.numel()
    assert sum(lif.stats["level_counts"].values()) == plain.numel()
    assert set(lif.stats["level_counts"]) == {-3, -2, -1, 0, 1}
    assert math.isclose(lif.spike_rate, plain.mean().item(), rel_tol=1e-6)
    lif.reset_stats()
    assert lif.stats["neuron_steps"] == 0


def test_gate_zeroes_current_per_channel():
    torch.manual_seed(2)
    lif = LIF(membrane=IntegerMembrane())
    current = torch.rand(3, 2, 4, 5, 5) * 3
    gate = torch.ones(3, 2, 4, 1, 1)
    gate[:, :, 1] = 0
    s = lif(current, gate=gate)
    assert s[:, :, 1].sum() == 0
    assert torch.equal(s[:, :, 0], lif(current[:, :, :1])[:, :, 0])


def test_bad_arguments():
    with pytest.raises(ValueError):
        LIF(tau=1.5)
    with pytest.raises(ValueError):
        LIF(learn_threshold="neuron")
    with pytest.raises(ValueError):
        LIF()(torch.ones(3))
