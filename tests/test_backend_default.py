"""Models built from a recipe or a QuantSpec train on the fused LIF kernel; the reference is the oracle."""

import tomllib
from importlib import resources

import pytest
import torch

from spquant import LIF
from spquant.models import VGG9, QuantSpec, build_model


def _recipe_models():
    """(recipe:variant, model section, quant dict) for every shipped recipe and variant."""
    out = []
    for path in sorted(resources.files("spquant").joinpath("configs").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".toml"):
            continue
        raw = tomllib.loads(path.read_text())
        variants = raw.get("variants") or {"": {}}
        for name, overrides in variants.items():
            quant = dict(raw.get("quant", {}))
            for key, value in overrides.items():
                if key.startswith("quant."):
                    quant[key[len("quant.") :]] = value
            out.append((f"{path.name[:-5]}:{name}", raw["model"], quant))
    return out


RECIPES = _recipe_models()


def test_quantspec_default_backend_is_fused():
    assert QuantSpec().backend == "fused"
    for mode in ("fp32", "quant", "spquant"):
        assert QuantSpec(mode).neuron(channels=4).backend == "fused"
    with pytest.raises(ValueError, match="backend"):
        QuantSpec(backend="cuda")


@pytest.mark.parametrize("recipe", [r[0] for r in RECIPES])
def test_every_recipe_builds_fused_neurons(recipe):
    _, model, quant = next(r for r in RECIPES if r[0] == recipe)
    assert "backend" not in quant, "shipped recipes rely on the default"
    spec = QuantSpec.from_dict(
        {k: v for k, v in quant.items() if not isinstance(v, dict)}
        | ({"prune": quant["prune"]} if isinstance(quant.get("prune"), dict) else {})
    )
    kw = dict(in_channels=model["in_channels"], input_size=tuple(model["input"]), width=0.125, spec=spec)
    if model.get("plan") is not None:
        kw["plan"] = tuple(model["plan"])
    if model["name"] == "yolo" and model.get("anchors") is not None:
        kw["anchors"] = model["anchors"]
    net = build_model(model["name"], num_classes=model["classes"], **kw)
    lifs = [m for m in net.modules() if isinstance(m, LIF)]
    assert lifs and all(m.backend == "fused" for m in lifs)


@pytest.mark.parametrize("mode", ["fp32", "quant", "spquant"])
def test_spec_built_model_fused_equals_reference(mode, one_thread):
    """Same weights, same batch: spikes/logits bit-equal, loss equal, every gradient allclose."""
    torch.manual_seed(3)
    x = (torch.rand(3, 2, 2, 16, 16) < 0.3).float()
    y = torch.tensor([1, 4])
    nets, grads, outs = {}, {}, {}
    for backend in ("fused", "reference"):
        torch.manual_seed(0)
        net = VGG9(
            5,
            in_channels=2,
            input_size=(16, 16),
            plan=(8, "A", 16, "A"),
            spec=QuantSpec(mode, backend=backend),
        )
        net.train()
        out = net(x)
        torch.nn.functional.cross_entropy(out.mean(0), y).backward()
        nets[backend], outs[backend] = net, out.detach()
        grads[backend] = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    assert all(m.backend == "fused" for m in nets["fused"].lif_layers())
    assert all(m.backend == "reference" for m in nets["reference"].lif_layers())
    assert torch.equal(outs["fused"], outs["reference"])
    assert grads["fused"].keys() == grads["reference"].keys() and grads["fused"]
    for name, g in grads["reference"].items():
        assert torch.allclose(grads["fused"][name], g, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("fold_time", [True, False])
@pytest.mark.parametrize("mode", ["quant", "spquant"])
def test_weights_quantized_once_per_forward_not_per_step(mode, fold_time, one_thread):
    """Every weight quantizer (convs, classifier, gate predictors) runs once per forward for any T."""
    from spquant.quant import _WeightQuantizer

    net = VGG9(
        5,
        in_channels=2,
        input_size=(16, 16),
        plan=(8, "A", 16, "A"),
        spec=QuantSpec(mode, fold_time=fold_time),
    ).train()
    calls = {}
    quantizers = [m for m in net.modules() if isinstance(m, _WeightQuantizer)]
    assert len(quantizers) >= 3
    for q in quantizers:
        q.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
    net(torch.rand(5, 2, 2, 16, 16))
    assert calls and all(n == 1 for n in calls.values()), calls
