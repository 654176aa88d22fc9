"""spquant: fully quantized, sparse spiking neural networks (SpQuant-SNN).

Subpackages: ``spquant.data`` (event readers, datasets, transforms, emulator), ``spquant.train``
(recipes, TET loss, loop, checkpoints), ``spquant.deploy`` (fixed-point folding, .spq files, the
integer interpreter, NIR export), ``spquant.detect`` (spiking YOLO loss, NMS, mAP).

Train SNNs with ternary/low-bit weights and an integer (ternary) membrane potential, prune them
with spatial-channel gates guided by the membrane potential, count their true cost, and deploy
them as integer-only models that run bit-exactly.
"""

__version__ = "0.1.0"

from spquant.cost import measure_cost, static_cost
from spquant.layers import ConvBNLIF, QConv2d, QLinear, SeqModule, seq_apply
from spquant.models import VGG9, QuantSpec, ResNet19, SpikingYOLO, build_model
from spquant.neuron import LIF, lif_reference
from spquant.neuron.surrogate import ATan, Sigmoid, Triangle
from spquant.prune import ChannelGate, MembranePrior, build_gate, build_prior, gate_loss
from spquant.quant import (
    IdentityWeight,
    IntegerMembrane,
    SAWBWeight,
    StackedSigmoid,
    TernaryWeight,
    packed_bits_per_value,
    weight_quantizer,
)

__all__ = [
    "ATan",
    "ChannelGate",
    "MembranePrior",
    "QuantSpec",
    "ResNet19",
    "SpikingYOLO",
    "VGG9",
    "build_gate",
    "build_model",
    "build_prior",
    "gate_loss",
    "measure_cost",
    "static_cost",
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
