"""ResNet-19 in the TET / tdBN layout (docs/method.md#models).

3x3 stem with 128 channels; BasicBlocks [3, 3, 2] at 128 / 256 / 512 channels (stride 2 at the
start of stages 2 and 3); global average pooling -> FC 512->256 -> LIF -> FC -> classes.
"""

from __future__ import annotations

import torch
from torch import nn

from spquant.layers import ConvBNLIF, QConv2d, QLinear, SeqModule, seq_apply
from spquant.models.common import QuantSpec, SpikingClassifier
from spquant.models.vgg import _scaled

__all__ = ["ResNet19", "SpikingBasicBlock"]


class SpikingBasicBlock(nn.Module):
    r"""s = LIF(BN(Conv(LIF(BN(Conv(x))))) + shortcut(x)); shortcut = identity or 1x1 conv + BN."""

    def __init__(self, c_in: int, c_out: int, stride: int, spec: QuantSpec):
        super().__init__()
        self.conv1 = spec.conv_block(c_in, c_out, stride=stride)
        self.conv2 = QConv2d(c_out, c_out, 3, padding=1, weight_quant=spec.weight_quant(channels=c_out))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                QConv2d(
                    c_in, c_out, 1, stride=stride, padding=0, weight_quant=spec.weight_quant(channels=c_out)
                ),
                nn.BatchNorm2d(c_out),
            )
        self.neuron2 = spec.neuron(channels=c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.conv1(x)
        i = seq_apply(nn.Sequential(self.conv2, self.bn2), s1)
        i = i + (seq_apply(self.shortcut, x) if self.shortcut is not None else x)
        return self.neuron2(i)


class ResNet19(SpikingClassifier):
    """Spiking ResNet-19 with quantized weights and integer membrane.

    Example::

        >>> import torch
        >>> from spquant.models import ResNet19, QuantSpec
        >>> net = ResNet19(10, in_channels=3, width=0.0625, spec=QuantSpec(mode="quant", weight_bits=4))
        >>> net(torch.rand(2, 1, 3, 32, 32)).shape
        torch.Size([2, 1, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size=(32, 32),
        width: float = 1.0,
        spec: QuantSpec | None = None,
        blocks=(3, 3, 2),
    ):
        super().__init__()
        self.spec = spec = spec or QuantSpec()
        widths = [_scaled(c, width) for c in (128, 256, 512)]
        stem_neuron = spec.neuron(channels=widths[0])
        self.stem = ConvBNLIF(
            in_channels,
            widths[0],
            3,
            weight_quant=spec.weight_quant("first", widths[0]),
            neuron=stem_neuron,
            fold_time=spec.fold_time,
        )
        layers = []
        c_in = widths[0]
        for stage, (c_out, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(SpikingBasicBlock(c_in, c_out, stride, spec))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = SeqModule(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        hidden = _scaled(256, width)
        self.fc1 = QLinear(c_in, hidden, weight_quant=spec.weight_quant(channels=hidden))
        self.fc1_neuron = spec.neuron(channels=hidden)
        self.fc2 = QLinear(hidden, num_classes, weight_quant=spec.weight_quant("last", num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"ResNet19 expects [T, B, C, H, W], got shape {tuple(x.shape)}")
        x = self.pool(self.layers(self.stem(x)))
        x = self.fc1_neuron(seq_apply(self.fc1, x))
        return seq_apply(self.fc2, x)
