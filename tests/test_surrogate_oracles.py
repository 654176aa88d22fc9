"""Surrogate derivatives against independent closed-form values and finite differences.

The numbers here are computed by hand (see the comments), not with the library's own formulas, so a
wrong slope or constant in a surrogate fails here even if every other test uses the same formula.
"""

import math

import pytest
import torch

from spquant import ATan, Sigmoid, StackedSigmoid, Triangle


def _d(surrogate, x):
    return surrogate.derivative(torch.tensor(x, dtype=torch.float64)).item()


@pytest.mark.parametrize(
    "surrogate, x, expected",
    [
        (Triangle(), 0.0, 1.0),  # max(0, 1 - |x|) / 1
        (Triangle(), 0.25, 0.75),
        (Triangle(), -0.5, 0.5),
        (Triangle(), 1.0, 0.0),
        (Triangle(), -3.0, 0.0),
        (Triangle(2.0), 1.0, 0.25),  # (2 - 1) / 2^2
        (Triangle(2.0), 0.0, 0.5),
        (Sigmoid(), 0.0, 1.0),  # 4 * 0.5 * 0.5
        (Sigmoid(), 0.5, 4 * 0.8807970779778823 * 0.11920292202211755),  # sigmoid(2) = 0.8808
        (Sigmoid(1.0), 0.0, 0.25),
        (ATan(), 0.0, 1.0),  # (alpha/2) / (1 + 0)
        (ATan(), 1 / math.pi, 0.5),  # pi/2 * 2 * (1/pi) = 1  ->  1 / (1 + 1)
        (ATan(), -1 / math.pi, 0.5),
        (ATan(4.0), 1 / (2 * math.pi), 1.0),  # 2 / (1 + 1)
    ],
    ids=lambda v: repr(v),
)
def test_surrogate_closed_form_values(surrogate, x, expected):
    assert _d(surrogate, x) == pytest.approx(expected, abs=1e-12)


# Primitives written from their textbook definitions: the spike surrogate's derivative must be the
# derivative of a smooth step, checked by central differences.
PRIMITIVES = [
    (Sigmoid(4.0), lambda x: 1 / (1 + math.exp(-4.0 * x))),
    (ATan(2.0), lambda x: math.atan(math.pi / 2 * 2.0 * x) / math.pi + 0.5),
    (Triangle(1.0), lambda x: 0.0 if x <= -1 else 1.0 if x >= 1 else 0.5 + x - math.copysign(x * x, x) / 2),
]


@pytest.mark.parametrize("surrogate, primitive", PRIMITIVES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("x", [-1.7, -0.9, -0.3, 0.1, 0.45, 0.8, 2.2])
def test_surrogate_is_derivative_of_its_step(surrogate, primitive, x):
    h = 1e-6
    fd = (primitive(x + h) - primitive(x - h)) / (2 * h)
    assert _d(surrogate, x) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_stacked_sigmoid_ternary_values():
    # boundaries -0.5, 0.5, k = 2: each bump is 2 s (1 - s) with s = sigmoid(2 (x - c))
    # x = 0: s = sigmoid(-1) = 0.2689414 for both -> 2 * 2 * 0.2689414 * 0.7310586 = 0.7864477
    # x = 1: sigmoid(3) = 0.9525741 and sigmoid(1) = 0.7310586 -> 0.0903533 + 0.3932239 = 0.4835772
    # x = 2: sigmoid(5) = 0.9933071 and sigmoid(3) -> 0.0132961 + 0.0903533 = 0.1036494
    q = StackedSigmoid((-0.5, 0.5), k=2.0)
    for x, expected in [(0.0, 0.7864477), (1.0, 0.4835772), (-1.0, 0.4835772), (2.0, 0.1036494)]:
        assert _d(q, x) == pytest.approx(expected, abs=1e-6)
    # each bump peaks at k/4 on its boundary
    single = StackedSigmoid((0.5,), k=3.0)
    assert _d(single, 0.5) == pytest.approx(0.75, abs=1e-12)


def test_stacked_sigmoid_is_derivative_of_sum_of_sigmoids():
    q = StackedSigmoid((-1.5, -0.5, 0.5, 1.5), k=2.0)

    def primitive(x):
        return sum(1 / (1 + math.exp(-2.0 * (x - c))) for c in (-1.5, -0.5, 0.5, 1.5))

    h = 1e-6
    for x in (-2.3, -1.0, -0.2, 0.0, 0.7, 1.9):
        fd = (primitive(x + h) - primitive(x - h)) / (2 * h)
        assert _d(q, x) == pytest.approx(fd, rel=1e-6)
