"""Quantizers: the integer membrane quantizer and the weight quantizers.

Every quantizer is a small ``nn.Module`` named for what it does, and can give its integer codes and
scale (``to_int``) such that ``codes * scale`` equals the fake-quantized tensor exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "IntegerMembrane",
    "StackedSigmoid",
    "TernaryWeight",
    "SAWBWeight",
    "IdentityWeight",
    "weight_quantizer",
    "packed_bits_per_value",
    "round_half_up",
]


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties towards +inf: floor(x + 0.5).

    This is the rounding an integer datapath gets for free (add half, arithmetic shift right), so
    the integer deployment reproduces it bit-exactly.
    """
    return torch.floor(x + 0.5)


def packed_bits_per_value(levels: int) -> float:
    """Bits per value when values with ``levels`` states are packed base-``levels`` into bytes.

    Ternary: 3^5 = 243 <= 256, so 5 trits per byte = 1.6 bits. Never worse than the plain encoding.
    """
    if levels < 2:
        raise ValueError("need at least 2 levels")
    plain = math.ceil(math.log2(levels))
    per_byte = 0
    while levels ** (per_byte + 1) <= 256:
        per_byte += 1
    if per_byte == 0:
        return float(plain)
    return min(float(plain), 8.0 / per_byte)


class StackedSigmoid:
    """The stacked surrogate of the integer membrane quantizer (docs/method.md#integer-membrane).

    The derivative of a staircase with rounding boundaries ``c_i`` is replaced by a sum of
    sigmoid-derivative bumps, one centred on each boundary::

        dQ/dx ~= sum_i k * sigmoid(k (x - c_i)) * (1 - sigmoid(k (x - c_i)))

    Each bump peaks at k/4 on its boundary. For the ternary grid (boundaries -0.5, 0.5) and k = 2:
    dQ/dx(0) = 0.786, dQ/dx(+-1) = 0.484, dQ/dx(+-2) = 0.104.
    """

    def __init__(self, boundaries, k: float = 2.0):
        if k <= 0:
            raise ValueError(f"StackedSigmoid needs k > 0, got {k}")
        self.boundaries = tuple(float(c) for c in boundaries)
        self.k = float(k)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(x)
        for c in self.boundaries:
            sg = torch.sigmoid(self.k * (x - c))
            total = total + self.k * sg * (1 - sg)
        return total

    def __repr__(self) -> str:
        return f"StackedSigmoid(boundaries={self.boundaries}, k={self.k})"


class _MembraneQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, quantizer):
        ctx.save_for_backward(x)
        ctx.quantizer = quantizer
        return quantizer.quantize(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.quantizer.derivative(x), None


class IntegerMembrane(nn.Module):
    r"""Integer membrane quantizer Q (docs/method.md#integer-membrane).

    Forward: clamp to ``[lb, ub]`` then round to the nearest integer (ties towards +inf, which is
    what an integer datapath computes). The grid is in units of the initial threshold (1.0); it has
    no learned scale.

    Backward (``grad='stacked'``, default): the stacked surrogate, a sum of sigmoid-derivative bumps
    of slope ``k`` centred on every rounding boundary ``l + 0.5``:

    .. math:: \frac{dQ}{dx} \approx \sum_{l=lb}^{ub-1} k\,\sigma(k(x-l-\tfrac12))\,(1-\sigma(k(x-l-\tfrac12)))

    ``grad='ste'`` gives the clipped straight-through estimator (1 inside ``[lb, ub]``) instead, for
    ablations.

    Example::

        >>> import torch
        >>> q = IntegerMembrane()            # ternary {-1, 0, 1}
        >>> q(torch.tensor([-3.0, -0.6, 0.2, 0.5, 7.0])).tolist()
        [-1.0, -1.0, 0.0, 1.0, 1.0]
        >>> q.levels, q.plain_bits, q.packed_bits
        (3, 2, 1.6)
    """

    def __init__(self, lb: int = -1, ub: int = 1, k: float = 2.0, grad: str = "stacked"):
        super().__init__()
        if int(lb) != lb or int(ub) != ub:
            raise ValueError(f"IntegerMembrane bounds must be integers, got lb={lb}, ub={ub}")
        if not lb < ub:
            raise ValueError(f"IntegerMembrane needs lb < ub, got lb={lb}, ub={ub}")
        if lb > 0 or ub < 0:
            raise ValueError(f"IntegerMembrane grid must contain 0 (the reset value), got [{lb}, {ub}]")
        if grad not in ("stacked", "ste"):
            raise ValueError(f"IntegerMembrane grad must be 'stacked' or 'ste', got {grad!r}")
        self.lb, self.ub, self.k, self.grad = int(lb), int(ub), float(k), grad
        self.surrogate = StackedSigmoid([level + 0.5 for level in range(self.lb, self.ub)], k=self.k)

    @classmethod
    def from_bits(cls, bits: int, k: float = 2.0, grad: str = "stacked") -> IntegerMembrane:
        """Signed ``bits``-bit grid: [-2^(bits-1), 2^(bits-1) - 1]."""
        if bits < 2 or bits > 16:
            raise ValueError(f"membrane bits must be in 2..16, got {bits}")
        return cls(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, k=k, grad=grad)

    # -- description -------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return self.ub - self.lb + 1

    @property
    def plain_bits(self) -> int:
        """Bits of a plain binary encoding: ceil(log2(levels))."""
        return math.ceil(math.log2(self.levels))

    @property
    def packed_bits(self) -> float:
        """Bits per value when packed base-``levels`` into bytes (ternary: 1.6)."""
        return packed_bits_per_value(self.levels)

    @property
    def information_bits(self) -> float:
        """log2(levels): 1.58 for ternary."""
        return math.log2(self.levels)

    def extra_repr(self) -> str:
        return f"lb={self.lb}, ub={self.ub}, k={self.k}, grad={self.grad!r}"

    # -- maths -------------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The forward staircase without autograd."""
        return round_half_up(x.clamp(self.lb, self.ub))

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """Surrogate dQ/dx at x."""
        if self.grad == "ste":
            return ((x >= self.lb) & (x <= self.ub)).to(x.dtype)
        return self.surrogate.derivative(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MembraneQuantize.apply(x, self)

    def to_int(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Integer codes (int8) of the quantized membrane and their scale (1.0)."""
        return self.quantize(x).to(torch.int8), 1.0

    def all_levels(self) -> torch.Tensor:
        return torch.arange(self.lb, self.ub + 1, dtype=torch.float32)


class _PassThrough(torch.autograd.Function):
    """Returns the quantized tensor exactly; gradient passes straight through to the input."""

    @staticmethod
    def forward(ctx, w, wq):
        return wq

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _WeightQuantizer(nn.Module):
    """Base: subclasses implement ``codes_and_scale(w)``; forward is fake quantization with STE."""

    bits: float = 32

    def codes_and_scale(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            codes, scale = self.codes_and_scale(w.detach())
            wq = codes.to(w.dtype) * scale
        return _PassThrough.apply(w, wq)

    def to_int(self, w: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(integer codes as int8 / int16, scale) with ``codes * scale == forward(w)`` exactly."""
        with torch.no_grad():
            codes, scale = self.codes_and_scale(w.detach())
        dtype = torch.int8 if self.bits <= 8 else torch.int16
        return codes.to(dtype), float(scale)

    @property
    def max_code(self) -> int:
        raise NotImplementedError


class TernaryWeight(_WeightQuantizer):
    r"""Ternary weights, TWN style (docs/method.md#weight-quantizers): the "2-bit" weights of the paper.

    .. math:: \Delta = 0.05 \max|W|,\quad a = \operatorname{mean}_{|W|>\Delta}|W|,\quad
              W_q = a \cdot \operatorname{sign}(W) \cdot 1[|W| > \Delta]

    Straight-through gradient. Codes are in {-1, 0, 1}, scale ``a`` (one per layer).

    Example::

        >>> import torch
        >>> w = torch.tensor([0.9, -0.02, -0.5, 0.3])
        >>> codes, scale = TernaryWeight().to_int(w)
        >>> codes.tolist(), round(scale, 4)
        ([1, 0, -1, 1], 0.5667)
    """

    bits = 2

    def __init__(self, delta_ratio: float = 0.05):
        super().__init__()
        if not 0 <= delta_ratio < 1:
            raise ValueError(f"delta_ratio must be in [0, 1), got {delta_ratio}")
        self.delta_ratio = float(delta_ratio)

    @property
    def max_code(self) -> int:
        return 1

    def codes_and_scale(self, w):
        absw = w.abs()
        delta = self.delta_ratio * absw.max()
        mask = absw > delta
        n = mask.sum()
        scale = torch.where(n > 0, (absw * mask).sum() / n.clamp_min(1), torch.zeros((), dtype=w.dtype))
        codes = torch.sign(w) * mask
        return codes, scale

    def extra_repr(self) -> str:
        return f"delta_ratio={self.delta_ratio}"


# SAWB fit coefficients (z0, z1) of docs/method.md#weight-quantizers: alpha = std / z0 - (z1 / z0) * mean|W|.
# For a unit Gaussian this clips at ~2.5 (4-bit) and ~4.1 (8-bit) standard deviations.
_SAWB_COEFFS = {4: (0.077, 1.013), 8: (0.027, 1.114)}


class SAWBWeight(_WeightQuantizer):
    r"""Symmetric uniform b-bit weights with a SAWB-style clip (docs/method.md#weight-quantizers).

    ``n = 2^(b-1) - 1`` positive levels, ``codes = clamp(round(W * n / alpha), -n, n)``,
    ``scale = alpha / n``. ``clip='mean'`` (default) uses ``alpha = 2 * mean|W|``; ``clip='fit'``
    (4 and 8 bits) uses the SAWB fit ``alpha = std(W) / z0 - (z1 / z0) * mean|W|`` with
    z = (0.077, 1.013) for 4 bits and (0.027, 1.114) for 8 bits (falling back to 2 mean|W| if <= 0).
    Straight-through gradient.

    Example::

        >>> import torch
        >>> q = SAWBWeight(bits=4)
        >>> codes, scale = q.to_int(torch.tensor([0.1, -0.2, 0.05, 0.4]))
        >>> codes.tolist()
        [2, -4, 1, 7]
    """

    def __init__(self, bits: int = 4, clip: str = "mean"):
        super().__init__()
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"SAWBWeight bits must be in 2..16, got {bits}")
        if clip not in ("mean", "fit"):
            raise ValueError(f"SAWBWeight clip must be 'mean' or 'fit', got {clip!r}")
        if clip == "fit" and int(bits) not in _SAWB_COEFFS:
            raise ValueError(f"SAWB fit coefficients exist for bits {sorted(_SAWB_COEFFS)} only, got {bits}")
        self.bits = int(bits)
        self.clip = clip

    @property
    def max_code(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        mean_abs = w.abs().mean()
        if self.clip == "mean":
            return 2 * mean_abs
        z0, z1 = _SAWB_COEFFS[self.bits]
        alpha = w.std(unbiased=False) / z0 - (z1 / z0) * mean_abs
        return torch.where(alpha > 0, alpha, 2 * mean_abs)

    def codes_and_scale(self, w):
        n = self.max_code
        alpha = self.alpha(w)
        safe = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
        codes = torch.round(w * (n / safe)).clamp(-n, n)
        codes = torch.where(alpha > 0, codes, torch.zeros_like(codes))
        scale = safe / n
        return codes, scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip={self.clip!r}"


class IdentityWeight(_WeightQuantizer):
    """Full-precision weights (FP32 baseline): forward is the identity; there are no integer codes."""

    bits = 32

    def forward(self, w):
        return w

    def to_int(self, w):
        raise TypeError("IdentityWeight (FP32) has no integer codes; choose TernaryWeight or SAWBWeight")


def weight_quantizer(bits: int | None) -> nn.Module:
    """The quantizer for a bit width: None/32 -> identity, 2 -> ternary, 3..16 -> SAWB."""
    if bits is None or bits == 32:
        return IdentityWeight()
    if bits == 2:
        return TernaryWeight()
    return SAWBWeight(bits=bits)
