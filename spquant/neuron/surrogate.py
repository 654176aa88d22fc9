"""Surrogate gradients for the spike non-linearity.

The forward pass of a spike is the Heaviside step ``H(x) = 1 if x > 0 else 0`` with
``x = u - V_th``; its derivative is zero almost everywhere, so training replaces it by a smooth
surrogate ``dS/dx``. Each surrogate is a small picklable class (no closures) with two methods:

* ``derivative(x)``: the closed-form surrogate derivative, used by the hand-written backward passes;
* ``__call__(x)``: the spike with that surrogate gradient attached (an autograd function).

Example::

    >>> import torch
    >>> from spquant.neuron.surrogate import Triangle
    >>> x = torch.tensor([-2.0, -0.5, 0.0, 0.5], requires_grad=True)
    >>> s = Triangle()(x)
    >>> s.tolist()
    [0.0, 0.0, 0.0, 1.0]
    >>> s.sum().backward(); x.grad.tolist()
    [0.0, 0.5, 1.0, 0.5]
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "Surrogate",
    "Triangle",
    "Sigmoid",
    "ATan",
    "heaviside",
    "spike_with_threshold",
    "spike_backward",
    "sum_to_shape",
]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 1 where x > 0, else 0 (same dtype as x)."""
    return (x > 0).to(x.dtype)


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


class Surrogate:
    """Base class: subclasses implement ``derivative(x)``."""

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(x, self)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class Triangle(Surrogate):
    """Triangle surrogate (the paper's default): dS/dx = max(0, gamma - |x|) / gamma^2."""

    def __init__(self, gamma: float = 1.0):
        if gamma <= 0:
            raise ValueError(f"Triangle surrogate needs gamma > 0, got {gamma}")
        self.gamma = float(gamma)

    def derivative(self, x):
        return (self.gamma - x.abs()).clamp_min(0) / (self.gamma * self.gamma)


class Sigmoid(Surrogate):
    """Sigmoid surrogate: dS/dx = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))."""

    def __init__(self, alpha: float = 4.0):
        if alpha <= 0:
            raise ValueError(f"Sigmoid surrogate needs alpha > 0, got {alpha}")
        self.alpha = float(alpha)

    def derivative(self, x):
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1 - sg)


class ATan(Surrogate):
    """Arctangent surrogate: dS/dx = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)."""

    def __init__(self, alpha: float = 2.0):
        if alpha <= 0:
            raise ValueError(f"ATan surrogate needs alpha > 0, got {alpha}")
        self.alpha = float(alpha)

    def derivative(self, x):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


class _SpikeWithThreshold(torch.autograd.Function):
    """s = H(u - v_th) with the spike surrogate for u and the separate threshold path (docs/method.md#learnable-threshold):

    dL/dx    = dL/ds * surrogate'(x),                     x = u - v_th
    dL/du    = dL/dx
    dL/dv_th = - sum( dL/dx * (1 + sigmoid(x) * 1[x >= 0]) )   (summed over broadcast dims)
    """

    @staticmethod
    def forward(ctx, u, v_th, surrogate):
        x = u - v_th
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        ctx.v_th_shape = v_th.shape
        ctx.v_th_needs_grad = v_th.requires_grad
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_s):
        (x,) = ctx.saved_tensors
        v_th_shape = ctx.v_th_shape if ctx.needs_input_grad[1] else None
        grad_x, grad_v = spike_backward(x, grad_s, ctx.surrogate, v_th_shape)
        return grad_x, grad_v, None


def spike_backward(x: torch.Tensor, grad_s: torch.Tensor, surrogate: Surrogate, v_th_shape=None):
    """The backward of :func:`spike_with_threshold` at ``x = u - v_th``: ``(grad_x, grad_v)``.

    ``grad_x`` is the gradient for ``u`` (and for ``x``); ``grad_v`` the threshold's gradient summed
    to ``v_th_shape``, or None when ``v_th_shape`` is None (threshold not learned). Fused neuron
    kernels call this per step, so the surrogate and the threshold path have one implementation.
    """
    grad_x = grad_s * surrogate.derivative(x)
    grad_v = None
    if v_th_shape is not None:
        extra = torch.sigmoid(x) * (x >= 0).to(x.dtype)
        grad_v = sum_to_shape(-(grad_x * (1 + extra)), v_th_shape)
    return grad_x, grad_v


def sum_to_shape(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape`` (the inverse of broadcasting)."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1)
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t.reshape(shape)


def spike_with_threshold(u: torch.Tensor, v_th: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """Spike H(u - v_th) with the surrogate gradient for u and the threshold's own gradient for v_th
    (docs/method.md#learnable-threshold)."""
    return _SpikeWithThreshold.apply(u, v_th, surrogate)
