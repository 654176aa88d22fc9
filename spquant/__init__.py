"""spquant: fully quantized, sparse spiking neural networks (SpQuant-SNN).

Train SNNs with ternary/low-bit weights and an integer (ternary) membrane potential, prune them
with spatial-channel gates guided by the membrane potential, count their true cost, and deploy
them as integer-only models that run bit-exactly.
"""

__version__ = "0.1.0"

from spquant.layers import ConvBNLIF, QConv2d, QLinear, SeqModule, seq_apply
from spquant.neuron import LIF, lif_reference
from spquant.quant import (
    IdentityWeight,
    IntegerMembrane,
    SAWBWeight,
    TernaryWeight,
    packed_bits_per_value,
    weight_quantizer,
)
from spquant.surrogate import ATan, Sigmoid, StackedSigmoid, Triangle

__all__ = [
    "ATan",
    "ConvBNLIF",
    "IdentityWeight",
    "IntegerMembrane",
    "LIF",
    "QConv2d",
    "QLinear",
    "SAWBWeight",
    "SeqModule",
    "Sigmoid",
    "StackedSigmoid",
    "TernaryWeight",
    "Triangle",
    "lif_reference",
    "packed_bits_per_value",
    "seq_apply",
    "weight_quantizer",
]
