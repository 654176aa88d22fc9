"""Spiking models built from spquant blocks, each width-scalable and quantization-configurable."""

from spquant.models.common import MODES, QuantSpec, SpikingClassifier
from spquant.models.resnet import ResNet19, SpikingBasicBlock
from spquant.models.vgg import VGG9, VGG9_PLAN
from spquant.models.yolo import SpikingYOLO

MODELS = {"vgg9": VGG9, "resnet19": ResNet19}
MODELS["yolo"] = SpikingYOLO


def build_model(name: str, **kwargs):
    """Build a model by name ('vgg9', 'resnet19')."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kwargs)


__all__ = [
    "MODELS",
    "MODES",
    "QuantSpec",
    "ResNet19",
    "SpikingBasicBlock",
    "SpikingClassifier",
    "SpikingYOLO",
    "VGG9",
    "VGG9_PLAN",
    "build_model",
]
