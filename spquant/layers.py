"""Quantized layers and the conv + BN + LIF block, all over whole sequences [T, B, ...]."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spquant.neuron import LIF, SpikingNeuron
from spquant.neuron.fused import spikes_saved_compactly
from spquant.quant import IdentityWeight

__all__ = ["QConv2d", "QLinear", "SeqModule", "ConvBNLIF", "seq_apply"]


class QConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight passes through a weight quantizer (fake quantization).

    Example::

        >>> import torch
        >>> from spquant import QConv2d, TernaryWeight
        >>> conv = QConv2d(2, 4, 3, padding=1, weight_quant=TernaryWeight())
        >>> conv(torch.zeros(1, 2, 8, 8)).shape
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, *args, weight_quant: nn.Module | None = None, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.weight_quant = weight_quant if weight_quant is not None else IdentityWeight()

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QLinear(nn.Linear):
    """``nn.Linear`` whose weight passes through a weight quantizer (fake quantization)."""

    def __init__(self, *args, weight_quant: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_quant = weight_quant if weight_quant is not None else IdentityWeight()

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def seq_apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample module to every step of a [T, B, ...] sequence (T folded into batch)."""
    T, B = x.shape[:2]
    y = module(x.reshape(T * B, *x.shape[2:]))
    return y.reshape(T, B, *y.shape[1:])


class SeqModule(nn.Module):
    """Wraps a per-sample module (pooling, flatten, linear, ...) to run on [T, B, ...] sequences."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with spikes_saved_compactly(x):  # e.g. a pooling saves its spike input as bool
            return seq_apply(self.module, x)


class ConvBNLIF(nn.Module):
    r"""Conv (quantized weights) + BatchNorm + LIF over a whole sequence (docs/method.md#neuron).

    .. math:: I_t = BN(Conv_{W_q}(s^{l-1}_t)) \cdot g_t,\qquad s_t = LIF(I_t)

    The conv and BN see all T steps (BN statistics over time and batch); then the LIF recurrence
    runs over T. ``fold_time=True`` runs the conv once on the T steps folded into the batch;
    ``False`` runs it step by step (often faster on CPUs). Both give the same result.

    ``gate``: an optional module computing the learned gate from the input spikes (see
    :mod:`spquant.prune`); it returns a {0,1} tensor broadcastable to the current, or None.

    Example::

        >>> import torch
        >>> from spquant import ConvBNLIF, LIF, IntegerMembrane, TernaryWeight
        >>> block = ConvBNLIF(2, 8, weight_quant=TernaryWeight(), neuron=LIF(membrane=IntegerMembrane()))
        >>> block(torch.rand(4, 3, 2, 16, 16)).shape       # [T, B, C, H, W]
        torch.Size([4, 3, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        weight_quant: nn.Module | None = None,
        neuron: SpikingNeuron | None = None,
        fold_time: bool = True,
        gate: nn.Module | None = None,
    ):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = QConv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, weight_quant=weight_quant
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.neuron = neuron if neuron is not None else LIF()
        self.fold_time = fold_time
        self.gate = gate

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """The ungated input current BN(Conv(x)) for all steps, [T, B, C, H, W]."""
        T, B = x.shape[:2]
        if self.fold_time:
            y = self.conv(x.reshape(T * B, *x.shape[2:]))
        else:
            w = self.conv.quantized_weight()
            y = torch.cat([self.conv._conv_forward(x[t], w, self.conv.bias) for t in range(T)])
        y = self.bn(y)
        return y.reshape(T, B, *y.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"ConvBNLIF expects [T, B, C, H, W], got shape {tuple(x.shape)}")
        with spikes_saved_compactly(x):  # the conv saves its spike input as bool (exact, 4x smaller)
            i = self.current(x)
            g = self.gate(x, i) if self.gate is not None else None
        return self.neuron(i, gate=g)
