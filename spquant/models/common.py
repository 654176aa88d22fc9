"""What every model shares: the quantization/neuron specification and the readout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from spquant.neuron import LIF, SpikingNeuron
from spquant.neuron.surrogate import ATan, Sigmoid, Triangle
from spquant.quant import IntegerMembrane, weight_quantizer

__all__ = ["QuantSpec", "MODES", "SURROGATES", "SpikingClassifier"]

MODES = ("fp32", "quant", "spquant")
SURROGATES = {"triangle": Triangle, "sigmoid": Sigmoid, "atan": ATan}


@dataclass(frozen=True)
class QuantSpec:
    """How a model is quantized and pruned.

    mode: ``'fp32'`` — FP32 SNN baseline (FP32 weights, FP32 membrane);
          ``'quant'`` — Quant-SNN: ``weight_bits`` weights (2 = ternary, 4/8 = SAWB) and an integer
          membrane on the grid [membrane_lb, membrane_ub];
          ``'spquant'`` — quant + spatial-channel pruning (``prune``) + learnable threshold.
    first_bits / last_bits: precision of the first conv and the classifier in quantized modes
    (None = FP32). Bits: 1 = binary (sign with a scale), 2 = ternary, 3..16 = symmetric uniform.
    weight_scale: ``'stat'`` (scale from weight statistics: TWN / SAWB / mean|W|), ``'lsq-layer'``
    or ``'lsq-channel'`` (learned step sizes, one per layer or per output channel).
    backend: the LIF kernel, ``'fused'`` (default, see :mod:`spquant.neuron.fused`) or ``'reference'``
    (autograd through the readable loop; bit-identical forward, the oracle of the tests).
    """

    mode: str = "fp32"
    weight_bits: int = 2
    first_bits: int | None = 8
    last_bits: int | None = 8
    weight_scale: str = "stat"
    membrane_lb: int = -1
    membrane_ub: int = 1
    membrane_k: float = 2.0
    membrane_grad: str = "stacked"
    tau: float = 0.5
    threshold: float = 1.0
    learn_threshold: str | bool | None = None  # None: 'layer' in spquant mode, False otherwise
    surrogate: str = "triangle"
    surrogate_param: float | None = None
    backend: str = "fused"  # the reference (autograd through lif_reference) stays the tested oracle
    fold_time: bool = True
    prune: dict = field(default_factory=dict)  # options of spquant.prune (spquant mode)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {MODES}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {self.surrogate!r}; choose one of {sorted(SURROGATES)}")
        for name in ("weight_bits", "first_bits", "last_bits"):
            bits = getattr(self, name)
            if bits is not None and not (bits == 32 or 1 <= bits <= 16):
                raise ValueError(f"{name} must be 1..16, 32 or None, got {bits}")
        from spquant.quant import WEIGHT_SCALES

        if self.weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"weight_scale must be one of {WEIGHT_SCALES}, got {self.weight_scale!r}")
        if self.backend not in ("fused", "reference"):
            raise ValueError(f"backend must be 'fused' or 'reference', got {self.backend!r}")
        if not isinstance(self.prune, dict):
            raise ValueError(
                f"prune must be a dict of spquant.prune options, got {type(self.prune).__name__}"
            )
        if self.prune:
            from spquant.prune import validate_prune_options

            validate_prune_options(self.prune)

    # -- derived ------------------------------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return self.mode in ("quant", "spquant")

    @property
    def pruned(self) -> bool:
        return self.mode == "spquant"

    def bits_for(self, position: str) -> int | None:
        """Weight bits of a layer at ``position`` in {'first', 'hidden', 'last'} (None = FP32)."""
        if not self.quantized:
            return None
        return {"first": self.first_bits, "hidden": self.weight_bits, "last": self.last_bits}[position]

    def weight_quant(self, position: str = "hidden", channels: int | None = None) -> nn.Module:
        """The weight quantizer of a layer; ``channels`` = its output channels (per-channel scales)."""
        return weight_quantizer(self.bits_for(position), self.weight_scale, channels)

    def membrane(self) -> IntegerMembrane | None:
        if not self.quantized:
            return None
        return IntegerMembrane(self.membrane_lb, self.membrane_ub, k=self.membrane_k, grad=self.membrane_grad)

    def threshold_mode(self):
        if self.learn_threshold is None:
            return "layer" if self.pruned else False
        return self.learn_threshold

    def make_surrogate(self):
        cls = SURROGATES[self.surrogate]
        return cls() if self.surrogate_param is None else cls(self.surrogate_param)

    def neuron(self, channels: int | None = None) -> LIF:
        return LIF(
            tau=self.tau,
            threshold=self.threshold,
            learn_threshold=self.threshold_mode(),
            membrane=self.membrane(),
            surrogate=self.make_surrogate(),
            channels=channels,
            backend=self.backend,
        )

    def conv_block(
        self, c_in: int, c_out: int, position: str = "hidden", kernel_size: int = 3, stride: int = 1
    ):
        """conv + BN + LIF block of this spec; in spquant mode with its learned gate and membrane prior."""
        from spquant.layers import ConvBNLIF

        gate = None
        neuron = self.neuron(channels=c_out)
        if self.pruned:
            from spquant.prune import build_gate, build_prior

            gate = build_gate(c_in, c_out, self.prune)
            neuron.prior = build_prior(self.prune)
        return ConvBNLIF(
            c_in,
            c_out,
            kernel_size,
            stride=stride,
            weight_quant=self.weight_quant(position, c_out),
            neuron=neuron,
            fold_time=self.fold_time,
            gate=gate,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown quantization option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class SpikingClassifier(nn.Module):
    """Base for classifiers: ``forward`` maps [T, B, C, H, W] to per-step logits [T, B, classes].

    Prediction is the argmax of the mean over T (``predict``). Direct encoding of static images is
    the caller's job (repeat the image T times); the first conv+BN+LIF then acts as the encoder.
    """

    spec: QuantSpec

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).mean(0).argmax(-1)

    def lif_layers(self) -> list[LIF]:
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]
