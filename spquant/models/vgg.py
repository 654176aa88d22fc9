"""VGG-9 (docs/method.md#models): 64c3-128c3-AP2-256c3-256c3-AP2-512c3-512c3-AP2-512c3-512c3-AP2-FC."""

from __future__ import annotations

import torch
from torch import nn

from spquant.layers import QLinear, SeqModule, seq_apply
from spquant.models.common import QuantSpec, SpikingClassifier

__all__ = ["VGG9", "VGG9_PLAN"]

# channel counts, "A" = 2x2 average pooling on spikes
VGG9_PLAN = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGG9(SpikingClassifier):
    """Spiking VGG-9 with quantized weights, integer membrane and (spquant mode) pruning gates.

    Args:
        num_classes: classifier outputs.
        in_channels: input channels (2 or 3 for event frames, 1 for MNIST).
        input_size: (H, W) of the input; must be divisible by 16.
        width: channel multiplier (1.0 = the paper's widths).
        spec: :class:`QuantSpec` (mode fp32 / quant / spquant and precisions).

    Example::

        >>> import torch
        >>> from spquant.models import VGG9, QuantSpec
        >>> net = VGG9(10, in_channels=1, input_size=(32, 32), width=0.125, spec=QuantSpec(mode="quant"))
        >>> net(torch.rand(2, 3, 1, 32, 32)).shape           # [T, B, classes]
        torch.Size([2, 3, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=(48, 48),
        width: float = 1.0,
        spec: QuantSpec | None = None,
        plan=VGG9_PLAN,
    ):
        super().__init__()
        self.spec = spec or QuantSpec()
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        pools = sum(1 for p in plan if p == "A")
        if h % (2**pools) or w % (2**pools):
            raise ValueError(f"VGG9 input size {h}x{w} must be divisible by {2**pools}")
        layers: list[nn.Module] = []
        c_in, first = in_channels, True
        for item in plan:
            if item == "A":
                layers.append(SeqModule(nn.AvgPool2d(2)))
                h, w = h // 2, w // 2
                continue
            c_out = _scaled(item, width)
            layers.append(self.spec.conv_block(c_in, c_out, "first" if first else "hidden"))
            c_in, first = c_out, False
        self.features = nn.Sequential(*layers)
        self.flatten = SeqModule(nn.Flatten())
        self.classifier = QLinear(
            c_in * h * w, num_classes, weight_quant=self.spec.weight_quant("last", num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"VGG9 expects [T, B, C, H, W], got shape {tuple(x.shape)}")
        return seq_apply(self.classifier, self.flatten(self.features(x)))
