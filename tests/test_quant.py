import math

import pytest
import torch

from spquant import (
    IdentityWeight,
    IntegerMembrane,
    SAWBWeight,
    TernaryWeight,
    packed_bits_per_value,
    weight_quantizer,
)


# ---------------------------------------------------------------- membrane quantizer forward
@pytest.mark.parametrize("lb,ub", [(-1, 1), (-3, 1), (-2, 1), (-4, 3), (-8, 7)])
def test_every_level_round_trips(lb, ub):
    q = IntegerMembrane(lb, ub)
    levels = torch.arange(lb, ub + 1, dtype=torch.float32)
    assert torch.equal(q(levels), levels)
    codes, scale = q.to_int(levels)
    assert scale == 1.0 and codes.dtype == torch.int8
    assert torch.equal(codes.float() * scale, levels)


@pytest.mark.parametrize("lb,ub", [(-1, 1), (-3, 1), (-8, 7)])
def test_values_between_levels_round_to_nearest_ties_up(lb, ub):
    q = IntegerMembrane(lb, ub)
    for level in range(lb, ub):
        lo, hi = float(level), float(level + 1)
        xs = torch.tensor([lo + 0.1, lo + 0.49, lo + 0.5, lo + 0.51, hi - 0.01])
        expect = torch.tensor([lo, lo, hi, hi, hi])
        assert torch.equal(q(xs), expect), (level, q(xs))


@pytest.mark.parametrize("lb,ub", [(-1, 1), (-3, 1)])
def test_clamping(lb, ub):
    q = IntegerMembrane(lb, ub)
    xs = torch.tensor([-100.0, lb - 0.7, ub + 0.7, 1e6])
    assert q(xs).tolist() == [lb, lb, ub, ub]


def test_level_and_bit_reporting():
    t = IntegerMembrane()
    assert (t.levels, t.plain_bits, t.packed_bits) == (3, 2, 1.6)
    assert math.isclose(t.information_bits, math.log2(3))
    five = IntegerMembrane(-3, 1)
    assert (five.levels, five.plain_bits) == (5, 3)
    assert math.isclose(five.packed_bits, 8 / 3)  # 5^3 = 125 <= 256
    for bits in (2, 3, 4):
        q = IntegerMembrane.from_bits(bits)
        assert q.levels == 2**bits and q.plain_bits == bits and q.packed_bits == bits
        assert (q.lb, q.ub) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert packed_bits_per_value(2) == 1.0


def test_bad_grids_rejected():
    for lb, ub in [(1, 1), (2, 1), (1, 3), (-3, -1), (0.5, 1)]:
        with pytest.raises(ValueError):
            IntegerMembrane(lb, ub)
    with pytest.raises(ValueError):
        IntegerMembrane(grad="nope")


# ---------------------------------------------------------------- stacked surrogate backward
def _grad_at(q, values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    q(x).sum().backward()
    return x.grad


def test_ternary_stacked_gradient_matches_spec_numbers():
    g = _grad_at(IntegerMembrane(k=2.0), [0.0, 1.0, -1.0, 2.0, -2.0])
    expect = torch.tensor([0.786, 0.484, 0.484, 0.104, 0.104], dtype=torch.float64)
    assert torch.allclose(g, expect, atol=1e-3), g


def _closed_form(x, boundaries, k):
    sig = lambda z: 1 / (1 + math.exp(-z))
    return sum(k * sig(k * (x - c)) * (1 - sig(k * (x - c))) for c in boundaries)


@pytest.mark.parametrize("k", [1.0, 2.0, 5.0])
def test_five_level_gradient_closed_form(k):
    q = IntegerMembrane(-3, 1, k=k)
    points = [-4.0, -3.0, -2.5, -1.2, 0.0, 0.3, 1.0, 2.7]
    g = _grad_at(q, points)
    boundaries = [-2.5, -1.5, -0.5, 0.5]
    for x, gx in zip(points, g.tolist()):
        assert math.isclose(gx, _closed_form(x, boundaries, k), rel_tol=1e-9, abs_tol=1e-12)


def test_ste_gradient_option():
    g = _grad_at(IntegerMembrane(grad="ste"), [-1.5, -1.0, 0.3, 1.0, 1.2])
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


# ---------------------------------------------------------------- weight quantizers
def test_ternary_weight_matches_twn_definition():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    q = TernaryWeight()
    wq = q(w)
    delta = 0.05 * w.abs().max()
    mask = w.abs() > delta
    a = w.abs()[mask].mean()
    assert torch.allclose(wq, torch.sign(w) * mask * a)
    codes, scale = q.to_int(w)
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(codes.float() * scale, wq)  # exactly
    assert math.isclose(scale, a.item(), rel_tol=1e-6)


def test_ternary_codes_enumerate_and_round_trip():
    a = 0.3125
    codes = torch.tensor([-1, 0, 1] * 7, dtype=torch.float32)
    w = codes * a
    got_codes, scale = TernaryWeight().to_int(w)
    assert torch.equal(got_codes.float(), codes) and scale == a
    assert torch.equal(TernaryWeight()(w), w)


def test_ternary_all_zero_weights():
    codes, scale = TernaryWeight().to_int(torch.zeros(5))
    assert codes.abs().sum() == 0 and scale == 0.0


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_sawb_every_code_round_trips(bits):
    q = SAWBWeight(bits=bits)
    n = 2 ** (bits - 1) - 1
    torch.manual_seed(bits)
    w = torch.randn(1000)
    codes, scale = q.to_int(w)
    assert codes.abs().max() <= n
    assert torch.equal(codes.float() * scale, q(w))  # exactly the fake-quantized tensor
    # every representable code, dequantized with the layer's scale, quantizes back to itself
    all_codes = torch.arange(-n, n + 1, dtype=torch.float32)
    levels = all_codes * scale
    recoded = torch.round(levels / scale).clamp(-n, n)
    assert torch.equal(recoded, all_codes)
    assert torch.equal(q.codes_and_scale(w)[0], torch.round(w * n / (2 * w.abs().mean())).clamp(-n, n))


@pytest.mark.parametrize("bits", [4, 8])
def test_sawb_fit_clip(bits):
    torch.manual_seed(1)
    w = torch.randn(10000)
    z0, z1 = {4: (0.077, 1.013), 8: (0.027, 1.114)}[bits]
    alpha = w.std(unbiased=False) / z0 - z1 / z0 * w.abs().mean()
    q = SAWBWeight(bits=bits, clip="fit")
    assert torch.allclose(q.alpha(w), alpha)
    codes, scale = q.to_int(w)
    assert math.isclose(scale, (alpha / (2 ** (bits - 1) - 1)).item(), rel_tol=1e-6)
    assert torch.equal(codes.float() * scale, q(w))


def test_weight_quantizers_pass_gradient_straight_through():
    for q in (TernaryWeight(), SAWBWeight(4), IdentityWeight()):
        w = torch.randn(20, requires_grad=True)
        g = torch.randn(20)
        (q(w) * g).sum().backward()
        assert torch.equal(w.grad, g)


def test_weight_quantizer_factory_and_errors():
    assert isinstance(weight_quantizer(2), TernaryWeight)
    assert isinstance(weight_quantizer(4), SAWBWeight) and weight_quantizer(4).bits == 4
    assert isinstance(weight_quantizer(None), IdentityWeight)
    with pytest.raises(TypeError, match="no integer codes"):
        IdentityWeight().to_int(torch.ones(3))
    with pytest.raises(ValueError):
        SAWBWeight(bits=1)
    with pytest.raises(ValueError):
        SAWBWeight(bits=5, clip="fit")
