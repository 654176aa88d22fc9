"""The op table of the integer program: every op a folded model uses is in it, and the table is
what the loader validates against and what the bound analysis dispatches on."""

import copy

import pytest

from spquant.deploy import OPS, DeployError, ModelFileError, analyze, fold_model, load, save
from spquant.models import QuantSpec, SpikingYOLO

from .helpers import tiny_model


def _programs():
    vgg = tiny_model("vgg", size=16, prune={}).eval()
    resnet = tiny_model("resnet", size=16).eval()
    spec = QuantSpec(mode="quant")
    yolo = SpikingYOLO(2, in_channels=2, input_size=(16, 16), plan=(4, "M", 4), spec=spec).eval()
    return [
        fold_model(vgg, (1, 16, 16)),
        fold_model(resnet, (1, 16, 16)),
        fold_model(yolo, (2, 16, 16), input_bits=8, input_scale=1.0),
    ]


def test_folded_models_use_only_table_ops_and_cover_all_of_it():
    used = {n["op"] for p in _programs() for n in p.nodes}
    assert used <= set(OPS)
    # a pruned VGG, a ResNet and a detector between them use every op of the table
    assert used == set(OPS), sorted(set(OPS) - used)


def test_table_entries_are_well_formed():
    for op, spec in OPS.items():
        assert callable(spec.bounds), op
        assert all(lo <= hi for lo, hi in spec.ints.values()), op
        assert spec.arity and all(a >= 1 for a in spec.arity), op


def test_unknown_op_is_refused_by_analysis_and_by_the_loader(tmp_path, monkeypatch):
    program = _programs()[0]
    bad = copy.deepcopy(program)
    bad.nodes[-1]["op"] = "mystery"
    with pytest.raises(DeployError, match="unknown op 'mystery'"):
        analyze(bad)
    import spquant.deploy.targets.spq as spq

    with monkeypatch.context() as m:  # write the file as a buggy writer would: no analysis
        m.setattr(spq, "analyze", lambda program: {})
        save(bad, tmp_path / "bad.spq")
    with pytest.raises(ModelFileError, match="unknown op 'mystery'"):
        load(tmp_path / "bad.spq")


def test_every_consumer_table_handles_exactly_the_table_ops():
    from spquant.deploy.sim import _SIM_OPS
    from spquant.deploy.targets.nir import _NIR_OPS

    assert set(_SIM_OPS) == set(OPS)
    assert set(_NIR_OPS) == set(OPS)


def test_nir_refuses_max_pooling_by_name():
    pytest.importorskip("nir")
    from spquant.deploy.targets.nir import to_nir

    detector = _programs()[2]
    with pytest.raises(DeployError, match="NIR has no max-pooling node"):
        to_nir(detector)
