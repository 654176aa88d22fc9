"""A YOLOv2-style spiking detector (docs/method.md#models): conv+BN+LIF backbone with max pooling and a
grid head.

Layout (``plan``, channel counts scaled by ``width``; ``"M"`` = 2x2 max pooling on spikes)::

    32c3-M-64c3-M-128c3-M-256c3-M-512c3-512c3  ->  1x1 head: A x (5 + C) per cell

The backbone blocks are exactly the classifiers' blocks (:class:`~spquant.layers.ConvBNLIF` with
``spec``'s weight quantizer, LIF neuron with integer membrane in quantized modes, and in ``spquant``
mode the learned channel gate and membrane-potential prior of :mod:`spquant.prune`). The first conv
uses ``spec.first_bits``; the head, a 1x1 :class:`~spquant.layers.QConv2d` with bias, uses
``spec.last_bits``.

**Readout (membrane-free)**: the head is applied to the last block's spikes at every step and the
prediction is the MEAN over T of the per-step outputs — no membrane is kept in the head, like the
classifiers' mean-of-logits readout. Because the head is linear this equals the head applied to the
spike rate, which is how it is computed (one conv instead of T). ``forward`` returns
``[B, A, Gh, Gw, 5 + C]``: (objectness logit, t_x, t_y, t_w, t_h, class logits) per anchor and cell;
decode with :func:`spquant.detect.decode` (``model.decode(out)``).

Example::

    >>> import torch
    >>> from spquant.models import SpikingYOLO, QuantSpec
    >>> net = SpikingYOLO(3, in_channels=2, input_size=(64, 64), width=0.125, spec=QuantSpec(mode="quant"))
    >>> net(torch.rand(2, 1, 2, 64, 64)).shape       # input [T, B, C, H, W]
    torch.Size([1, 4, 4, 4, 8])
    >>> net.grid, net.stride
    ((4, 4), (16, 16))
"""

from __future__ import annotations

import torch
from torch import nn

from spquant.layers import QConv2d, SeqModule
from spquant.models.common import QuantSpec
from spquant.models.vgg import _scaled
from spquant.neuron import LIF, SpikingNeuron

__all__ = ["SpikingYOLO", "YOLO_PLAN", "DEFAULT_ANCHORS"]

YOLO_PLAN = (32, "M", 64, "M", 128, "M", 256, "M", 512, 512)
# anchors as fractions of the input (w, h); scaled to pixels by the input size when none are given
DEFAULT_ANCHORS = ((0.08, 0.10), (0.18, 0.22), (0.35, 0.40), (0.65, 0.60))


class SpikingYOLO(nn.Module):
    """Spiking YOLOv2-style detector.

    Args:
        num_classes: object classes C.
        in_channels: input channels (2 for ON/OFF event histograms).
        input_size: (H, W); must be divisible by 2 ** (number of "M" in ``plan``).
        width: channel multiplier.
        anchors: A (w, h) anchor sizes in input pixels (default: ``DEFAULT_ANCHORS`` x input size).
        spec: :class:`QuantSpec` (fp32 / quant / spquant).
        plan: backbone layout (ints = 3x3 conv+BN+LIF channels, "M" = 2x2 max pooling).
        head_kernel: kernel size of the head convolution (1 = YOLOv2's 1x1 head; 3 lets each cell's
            prediction read its neighbours, which a digit centred near a cell border needs).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 2,
        input_size=(64, 64),
        width: float = 1.0,
        anchors=None,
        spec: QuantSpec | None = None,
        plan=YOLO_PLAN,
        head_kernel: int = 1,
    ):
        super().__init__()
        self.spec = spec or QuantSpec()
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(int(v) for v in input_size)
        pools = sum(1 for p in plan if p == "M")
        if h % (2**pools) or w % (2**pools):
            raise ValueError(f"SpikingYOLO input size {h}x{w} must be divisible by {2**pools}")
        self.num_classes = int(num_classes)
        self.input_size = (h, w)
        if anchors is None:
            anchors = [(fw * w, fh * h) for fw, fh in DEFAULT_ANCHORS]
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2))
        self.num_anchors = self.anchors.shape[0]
        self.grid = (h // 2**pools, w // 2**pools)
        self.stride = (2**pools, 2**pools)
        layers: list[nn.Module] = []
        c_in, first = in_channels, True
        for item in plan:
            if item == "M":
                layers.append(SeqModule(nn.MaxPool2d(2)))
                continue
            c_out = _scaled(int(item), width)
            layers.append(self.spec.conv_block(c_in, c_out, "first" if first else "hidden"))
            c_in, first = c_out, False
        self.features = nn.Sequential(*layers)
        if head_kernel < 1 or head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be a positive odd number, got {head_kernel}")
        head_out = self.num_anchors * (5 + self.num_classes)
        self.head = QConv2d(
            c_in,
            head_out,
            head_kernel,
            padding=head_kernel // 2,
            bias=True,
            weight_quant=self.spec.weight_quant("last", head_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"SpikingYOLO expects [T, B, C, H, W], got shape {tuple(x.shape)}")
        s = self.features(x)
        y = self.head(s.mean(0))  # == mean over T of head(s_t): the head is linear (membrane-free readout)
        B, _, Gh, Gw = y.shape
        return y.view(B, self.num_anchors, 5 + self.num_classes, Gh, Gw).permute(0, 1, 3, 4, 2).contiguous()

    def per_step(self, x: torch.Tensor) -> torch.Tensor:
        """Head outputs at every step, [T, B, A, Gh, Gw, 5 + C] (their mean over T is ``forward``)."""
        s = self.features(x)
        T, B = s.shape[:2]
        y = self.head(s.reshape(T * B, *s.shape[2:]))
        y = y.view(T, B, self.num_anchors, 5 + self.num_classes, *y.shape[-2:])
        return y.permute(0, 1, 2, 4, 5, 3)

    def decode(
        self,
        out: torch.Tensor,
        conf_threshold: float = 0.05,
        nms_iou: float = 0.45,
        max_det: int = 100,
        agnostic: bool = False,
    ):
        """Detections per image ``[n, 6]`` (x1, y1, x2, y2, score, class) from ``forward``'s output."""
        from spquant.models.boxes import decode

        return decode(
            out,
            self.anchors,
            self.stride,
            conf_threshold,
            nms_iou,
            max_det,
            image_size=self.input_size,
            agnostic=agnostic,
        )

    def lif_layers(self) -> list[LIF]:
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]
