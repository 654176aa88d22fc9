"""Edges of the quantizer definitions, found by mutation testing (each assertion kills a mutant
that changed behaviour while the rest of the suite still passed)."""

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


@pytest.mark.parametrize(
    "levels, bits",
    [
        (2, 1.0),  # 2^8 = 256 fits a byte exactly: 8 values per byte
        (3, 1.6),  # 3^5 = 243 <= 256 < 3^6: 5 trits per byte
        (4, 2.0),
        (5, 8 / 3),  # 5^3 = 125, 5^4 = 625: 3 per byte = 2.67 < plain 3
        (16, 4.0),
        (17, 5.0),  # 17^1 only: 8 bits packed, plain 5 bits wins
        (256, 8.0),
        (257, 9.0),  # no whole value fits a byte: the plain width
    ],
)
def test_packed_bits_per_value(levels, bits):
    assert packed_bits_per_value(levels) == pytest.approx(bits)


def test_packed_bits_needs_two_levels():
    with pytest.raises(ValueError, match="at least 2 levels"):
        packed_bits_per_value(1)


def test_membrane_grid_bounds():
    m = IntegerMembrane(-1, 0)  # ub = 0 is a valid grid (two levels)
    assert m.levels == 2 and m.packed_bits == 1.0
    assert IntegerMembrane(0, 3).levels == 4
    with pytest.raises(ValueError, match="integers"):
        IntegerMembrane(-1.5, 1)
    for lb, ub in [(1, 3), (-3, -1)]:  # the grid must contain 0 (the reset value)
        with pytest.raises(ValueError):
            IntegerMembrane(lb, ub)


def test_membrane_from_bits_range():
    m16 = IntegerMembrane.from_bits(16)
    assert (m16.lb, m16.ub) == (-(2**15), 2**15 - 1)
    m2 = IntegerMembrane.from_bits(2)
    assert (m2.lb, m2.ub) == (-2, 1)
    for bad in (1, 17):
        with pytest.raises(ValueError, match="2..16"):
            IntegerMembrane.from_bits(bad)


def test_ste_derivative_window_keeps_dtype():
    m = IntegerMembrane(-1, 1, grad="ste")
    x = torch.tensor([-1.5, -1.0, 0.3, 1.0, 1.2], dtype=torch.float64)
    d = m.derivative(x)
    assert d.dtype == torch.float64
    assert d.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_weight_quantizer_by_bits():
    assert isinstance(weight_quantizer(None), IdentityWeight)
    assert isinstance(weight_quantizer(32), IdentityWeight)
    assert isinstance(weight_quantizer(2), TernaryWeight)
    q4 = weight_quantizer(4)
    assert isinstance(q4, SAWBWeight) and q4.bits == 4
    assert math.isclose(packed_bits_per_value(2 * 7 + 1), 4.0)  # 4-bit SAWB codes -7..7: 15 levels


def test_membrane_needs_two_levels_and_known_grad():
    with pytest.raises(ValueError):
        IntegerMembrane(0, 0)  # a single level cannot hold a potential
    with pytest.raises(ValueError, match="grad must be 'stacked' or 'ste'"):
        IntegerMembrane(-1, 1, grad="linear")
    with pytest.raises(ValueError, match="must contain 0"):
        IntegerMembrane(1, 2)
    assert IntegerMembrane.from_bits(3, k=5.0).k == 5.0
    assert IntegerMembrane.from_bits(3, grad="ste").grad == "ste"
