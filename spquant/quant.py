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
    "LSQWeight",
    "BinaryWeight",
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
        return codes.to(dtype), float(scale.detach()) if isinstance(scale, torch.Tensor) else float(scale)

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


class _LearnedStep(torch.autograd.Function):
    """LSQ fake quantization: forward ``codes * s`` exactly, LSQ gradients for ``w`` and ``s``."""

    @staticmethod
    def forward(ctx, w, s, n, grad_scale):
        v = w / s
        codes = round_half_up(v).clamp(-n, n)
        ctx.save_for_backward(v, codes)
        ctx.n, ctx.grad_scale, ctx.s_shape = n, grad_scale, s.shape
        return codes * s

    @staticmethod
    def backward(ctx, grad):
        v, codes = ctx.saved_tensors
        inside = (v >= -ctx.n) & (v <= ctx.n)
        grad_w = grad * inside.to(grad.dtype)
        # d(codes * s)/ds = round(v) - v inside the range, the clamped code outside it
        ds = grad * torch.where(inside, codes - v, codes) * ctx.grad_scale
        grad_s = ds.sum_to_size(ctx.s_shape) if ctx.s_shape != ds.shape else ds
        return grad_w, grad_s, None, None


class _SignWithScale(torch.autograd.Function):
    """Binary fake quantization ``s * sign(w)`` (sign(0) = +1): STE for ``w``, sum for ``s``."""

    @staticmethod
    def forward(ctx, w, s, grad_scale):
        codes = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
        ctx.save_for_backward(codes)
        ctx.grad_scale, ctx.s_shape = grad_scale, s.shape
        return codes * s

    @staticmethod
    def backward(ctx, grad):
        (codes,) = ctx.saved_tensors
        ds = grad * codes * ctx.grad_scale
        grad_s = ds.sum_to_size(ctx.s_shape) if ctx.s_shape != ds.shape else ds
        return grad, grad_s, None


class _ScaledQuantizer(_WeightQuantizer):
    """Base of the quantizers with a learned step ``s`` (one per layer, or one per output channel).

    ``s`` is created with the right shape at construction (``channels`` for per-channel) and
    initialised from the weights on the first forward (a buffer ``initialized`` records that, so a
    loaded model keeps its trained steps). ``init_from_weight`` sets it explicitly."""

    def __init__(self, per_channel: bool = False, channels: int | None = None, learn: bool = True):
        super().__init__()
        if per_channel and not channels:
            raise ValueError(f"{type(self).__name__}: per-channel scales need channels=C")
        self.per_channel = bool(per_channel)
        shape = (int(channels),) if per_channel else ()
        self.learn = bool(learn)
        if self.learn:
            self.step = nn.Parameter(torch.ones(shape))
        else:
            self.register_buffer("step", torch.ones(shape))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def _step_for(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            if w.shape[0] != self.step.shape[0]:
                raise ValueError(
                    f"{type(self).__name__}: {self.step.shape[0]} channel steps, weight {tuple(w.shape)}"
                )
            return self.step.view(-1, *([1] * (w.dim() - 1)))
        return self.step

    def _reduce_dims(self, w: torch.Tensor) -> tuple[int, ...]:
        return tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))

    def initial_step(self, w: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def init_from_weight(self, w: torch.Tensor) -> None:
        """Set the step(s) from the weight statistics (see ``initial_step``)."""
        s = self.initial_step(w.detach()).to(self.step.dtype).reshape(self.step.shape)
        s = torch.where(s > 0, s, torch.full_like(s, 1e-8))
        self.step.copy_(s)
        self.initialized.fill_(True)

    def _maybe_init(self, w: torch.Tensor) -> None:
        if not bool(self.initialized):
            self.init_from_weight(w)

    def _grad_scale(self, w: torch.Tensor) -> float:
        per_step = w.numel() // max(self.step.numel(), 1)
        return 1.0 / math.sqrt(max(per_step, 1) * max(self.max_code, 1))

    def to_int(self, w: torch.Tensor):
        """(codes int8/int16, scale): a float for one step per layer, a float32 tensor [C] per channel."""
        with torch.no_grad():
            self._maybe_init(w)
            codes, scale = self.codes_and_scale(w.detach())
        dtype = torch.int8 if self.bits <= 8 else torch.int16
        if self.per_channel:
            return codes.to(dtype), scale.detach().reshape(-1).clone()
        return codes.to(dtype), float(scale.detach()) if isinstance(scale, torch.Tensor) else float(scale)


class LSQWeight(_ScaledQuantizer):
    r"""Weights with a learned step size (LSQ, Esser et al. 2020), ternary or b-bit symmetric.

    ``codes = clamp(round(W / s), -n, n)``, ``W_q = codes * s`` with ``n = 2^(b-1) - 1`` (ternary:
    b = 2, n = 1). Gradients: straight-through for ``W`` inside the range (0 outside), and for
    ``s`` the LSQ gradient ``round(v) - v`` (inside) or ``+-n`` (outside), scaled by
    ``1 / sqrt(N n)`` with ``N`` the weights per step. The step starts from the statistic of the
    fixed quantizer of the same bits (ternary: the TWN scale ``a``; b-bit: ``alpha / n`` of
    SAWB), so an FP32 model starts from the codes the fixed quantizer would give it.

    Example::

        >>> import torch
        >>> q = LSQWeight(bits=2)
        >>> codes, scale = q.to_int(torch.tensor([0.9, -0.02, -0.5, 0.3]))
        >>> codes.tolist(), round(scale, 4)
        ([1, 0, -1, 1], 0.5667)
    """

    def __init__(self, bits: int = 2, per_channel: bool = False, channels: int | None = None):
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"LSQWeight bits must be in 2..16, got {bits}")
        super().__init__(per_channel, channels, learn=True)
        self.bits = int(bits)

    @property
    def max_code(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def initial_step(self, w: torch.Tensor) -> torch.Tensor:
        dims = self._reduce_dims(w)
        absw = w.abs()
        if self.bits == 2:  # TWN: mean |W| above 0.05 max|W|
            mask = absw > 0.05 * absw.amax(dim=dims, keepdim=True)
            return (absw * mask).sum(dim=dims) / mask.sum(dim=dims).clamp_min(1)
        return 2 * absw.mean(dim=dims) / self.max_code  # SAWB 'mean' clip alpha = 2 mean|W|

    def codes_and_scale(self, w):
        s = self._step_for(w)
        codes = round_half_up(w / s).clamp(-self.max_code, self.max_code)
        return codes, s

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self._maybe_init(w)
        return _LearnedStep.apply(w, self._step_for(w), float(self.max_code), self._grad_scale(w))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


class BinaryWeight(_ScaledQuantizer):
    r"""1-bit weights with a scale, as in Q-SNN: ``W_q = s * sign(W)`` (sign(0) = +1), codes {-1, +1}.

    ``learn=True`` (default) trains ``s`` (one per layer or per output channel, initialised to
    mean|W|; gradient ``sum(dL/dW_q * sign(W))`` scaled like LSQ); ``learn=False`` recomputes
    ``s = mean|W|`` every forward (XNOR-Net). Straight-through gradient for ``W``.

    Example::

        >>> import torch
        >>> codes, scale = BinaryWeight().to_int(torch.tensor([0.9, -0.02, 0.0, 0.3]))
        >>> codes.tolist(), round(scale, 4)
        ([1, -1, 1, 1], 0.305)
    """

    bits = 1

    def __init__(self, per_channel: bool = False, channels: int | None = None, learn: bool = True):
        super().__init__(per_channel, channels, learn=learn)

    @property
    def max_code(self) -> int:
        return 1

    def initial_step(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().mean(dim=self._reduce_dims(w))

    def codes_and_scale(self, w):
        if not self.learn:
            self.init_from_weight(w)
        codes = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
        return codes, self._step_for(w)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.learn:
            with torch.no_grad():
                self.init_from_weight(w)
            return _SignWithScale.apply(w, self._step_for(w).detach(), 0.0)
        self._maybe_init(w)
        return _SignWithScale.apply(w, self._step_for(w), self._grad_scale(w))

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}, learn={self.learn}"


WEIGHT_SCALES = ("stat", "lsq-layer", "lsq-channel")


def weight_quantizer(bits: int | None, scale: str = "stat", channels: int | None = None) -> nn.Module:
    """The quantizer for a bit width: None/32 -> identity, 1 -> binary, 2 -> ternary, 3..16 -> SAWB.

    ``scale``: ``'stat'`` (the scale is a statistic of the weights: TWN / SAWB / mean|W| for
    binary), ``'lsq-layer'`` or ``'lsq-channel'`` (a learned step per layer or per output channel:
    :class:`LSQWeight`, or :class:`BinaryWeight` with a learned scale; per channel needs
    ``channels``)."""
    if scale not in WEIGHT_SCALES:
        raise ValueError(f"weight scale must be one of {WEIGHT_SCALES}, got {scale!r}")
    if bits is None or bits == 32:
        return IdentityWeight()
    per_channel = scale == "lsq-channel"
    if bits == 1:
        return BinaryWeight(per_channel=per_channel, channels=channels, learn=scale != "stat")
    if scale != "stat":
        return LSQWeight(bits=bits, per_channel=per_channel, channels=channels)
    if bits == 2:
        return TernaryWeight()
    return SAWBWeight(bits=bits)
