import pytest
import torch

from spquant import LIF, IdentityWeight, IntegerMembrane, SAWBWeight, TernaryWeight
from spquant.models import VGG9, QuantSpec, ResNet19, build_model


def lif_neurons_per_step(net, in_shape):
    """LIF neurons per sample per step, counted from a real forward pass."""
    counts = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: counts.append(o[0, 0].numel()))
        for m in net.modules()
        if isinstance(m, LIF)
    ]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, *in_shape))
    for h in hooks:
        h.remove()
    return sum(counts)


def test_vgg9_paper_neuron_count_at_48x48():
    assert lif_neurons_per_step(VGG9(10, 3, (48, 48)), (3, 48, 48)) == 921_600


def test_resnet19_paper_neuron_count_at_32x32():
    assert lif_neurons_per_step(ResNet19(10, 3, (32, 32)), (3, 32, 32)) == 1_442_048


@pytest.mark.parametrize("T,B", [(1, 2), (3, 1)])
def test_vgg9_shapes_and_width(T, B):
    net = VGG9(7, in_channels=2, input_size=(48, 64), width=0.0625, spec=QuantSpec("quant"))
    out = net(torch.rand(T, B, 2, 48, 64))
    assert out.shape == (T, B, 7)
    assert net.features[0].conv.out_channels == 4
    assert net.predict(torch.rand(T, B, 2, 48, 64)).shape == (B,)
    with pytest.raises(ValueError, match="divisible"):
        VGG9(10, 3, (30, 30))
    with pytest.raises(ValueError, match="T, B, C, H, W"):
        net(torch.rand(2, 48, 64))


def test_quantization_modes_choose_the_right_quantizers():
    fp = VGG9(10, 1, (32, 32), width=0.125, spec=QuantSpec("fp32"))
    assert all(isinstance(m.conv.weight_quant, IdentityWeight) for m in fp.features if hasattr(m, "conv"))
    assert all(lif.membrane is None and not lif.learn_threshold for lif in fp.lif_layers())
    q = VGG9(10, 1, (32, 32), width=0.125, spec=QuantSpec("quant"))
    convs = [m.conv for m in q.features if hasattr(m, "conv")]
    assert isinstance(convs[0].weight_quant, SAWBWeight) and convs[0].weight_quant.bits == 8
    assert all(isinstance(c.weight_quant, TernaryWeight) for c in convs[1:])
    assert isinstance(q.classifier.weight_quant, SAWBWeight) and q.classifier.weight_quant.bits == 8
    assert all(isinstance(lif.membrane, IntegerMembrane) for lif in q.lif_layers())
    q4 = ResNet19(10, 3, width=0.0625, spec=QuantSpec("quant", weight_bits=4, first_bits=None))
    assert isinstance(q4.stem.conv.weight_quant, IdentityWeight)
    assert isinstance(q4.layers[0].conv2.weight_quant, SAWBWeight)


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown mode"):
        QuantSpec("int3")
    with pytest.raises(ValueError, match="unknown quantization option"):
        QuantSpec.from_dict({"mode": "quant", "wbits": 2})
    with pytest.raises(ValueError, match="weight_bits"):
        QuantSpec("quant", weight_bits=0)
    with pytest.raises(ValueError, match="weight_scale"):
        QuantSpec("quant", weight_scale="lsq")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet")
    assert QuantSpec.from_dict(QuantSpec("quant", weight_bits=4).to_dict()) == QuantSpec(
        "quant", weight_bits=4
    )


def test_models_train_a_step():
    torch.manual_seed(0)
    for net in (
        VGG9(10, 1, (16, 16), width=0.125, spec=QuantSpec("quant", learn_threshold="layer")),
        ResNet19(10, 1, (8, 8), width=0.0625, spec=QuantSpec("quant")),
    ):
        x = torch.rand(2, 4, 1, *((16, 16) if isinstance(net, VGG9) else (8, 8)))
        loss = net(x).mean(0).logsumexp(-1).mean()
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None for g in grads[:1])
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
