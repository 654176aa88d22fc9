"""NIR export round trip (skipped when the optional extra 'nir' is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spquant.deploy import fold_model
from tests.deploy.helpers import tiny_model

nir = pytest.importorskip("nir", reason="NIR export needs the optional extra 'nir'")


@pytest.mark.parametrize("kind", ["vgg", "resnet", "vgg_pruned"])
def test_nir_round_trip(kind, tmp_path):
    from spquant.deploy.targets.nir import export_nir

    torch.manual_seed(0)
    if kind == "vgg_pruned":
        model = tiny_model("vgg", size=16, prune={}).eval()
    else:
        model = tiny_model(kind, size=16, learn_threshold="channel").eval()
    program = fold_model(model, (1, 16, 16))
    export_nir(program, tmp_path / "m.nir", dt=1e-3)
    g = nir.read(tmp_path / "m.nir")
    assert g.metadata["frac_bits"] == 16 and float(g.metadata["dt"]) == 1e-3
    lifs = {k: v for k, v in g.nodes.items() if isinstance(v, nir.LIF)}
    assert len(lifs) == sum(n["op"] in ("lif", "lif_pruned") for n in program.nodes)
    for name, node in lifs.items():
        src = program.node(name)
        assert list(node.metadata["membrane_grid"]) == [src["lb"], src["ub"]]
        assert node.metadata["reset"] == "hard_to_zero_then_quantize"
        assert node.metadata["membrane_rounding"] == "half_up"
        if src["op"] == "lif_pruned":
            assert "dropped" in node.metadata
        V = program.arrays[src["V"]] / 2.0**16
        assert np.allclose(np.unique(node.v_threshold), np.unique(V.astype(np.float32)))
        # tau = 2 dt, r = 2 reproduces u = m/2 + I under forward Euler
        assert np.allclose(node.tau, 2e-3) and np.allclose(node.r, 2.0) and np.all(node.v_reset == 0)
    convs = [n for n in program.nodes if n["op"] == "conv"]
    for n in convs:
        node = g.nodes[n["name"]]
        assert node.metadata["weight_bits"] == n["bits"]
        w = program.arrays[n["weight"]] * (program.arrays[n["M"]] / 2.0 ** (16 + n["shift"])).reshape(
            -1, 1, 1, 1
        )
        assert np.allclose(node.weight, w, rtol=1e-6, atol=1e-9)
    assert ("input", convs[0]["name"]) in g.edges
