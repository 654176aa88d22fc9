"""spquant export / spquant run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spquant.cli import main
from spquant.deploy import Interpreter, export, load
from tests.deploy.helpers import synthetic_digits, tiny_model


def test_run_npz(tmp_path, capsys):
    torch.manual_seed(0)
    model = tiny_model("vgg", size=16).eval()
    export(model, tmp_path / "m.spq", (1, 16, 16))
    x, y = synthetic_digits(40, size=16)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for path in ("fast", "reference"):
        assert (
            main(
                [
                    "run",
                    str(tmp_path / "m.spq"),
                    "--data",
                    str(tmp_path / "d.npz"),
                    "--T",
                    "2",
                    "--path",
                    path,
                    "--batch-size",
                    "16",
                ]
            )
            == 0
        )
        res = json.loads(capsys.readouterr().out)
        assert res["samples"] == 40
        want = (Interpreter(load(tmp_path / "m.spq")).predict(x, T=2) == y).mean()
        assert res["accuracy"] == pytest.approx(want)
        assert res["file"]["file_bytes"] == (tmp_path / "m.spq").stat().st_size
    assert res["ops_per_sample"]["dense_macs"] > res["ops_per_sample"]["sops"] > 0


def test_export_real_run_folder(tmp_path, capsys):
    """spquant train -> spquant export RUN (input encoding from the run's config) -> interpreter == deploy-sim."""
    from spquant.deploy import DeploySim
    from spquant.train import load_config, train
    from spquant.train.data import load_split

    cfg = load_config(
        "demo:quant",
        [
            "data.dataset='synthetic'",
            "data.train_subset=64",
            "data.test_subset=16",
            "train.max_steps=3",
            "train.batch_size=16",
            "run.progress=false",
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "m.spq"
    assert main(["export", str(tmp_path / "run"), "-o", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["file_bytes"] == out.stat().st_size
    program = load(out)
    assert program.input["shape"] == [cfg.model.in_channels, *cfg.model.input]
    test = load_split(cfg, "test")
    codes = test.inputs.numpy()  # uint8 pixels, the run's own input codes
    T = cfg.model.T
    env = DeploySim(program).run_codes(
        torch.from_numpy(np.broadcast_to(codes[None], (T, *codes.shape)).copy())
    )
    sim_logits = env[program.output].to(torch.int64).numpy()
    assert np.array_equal(sim_logits, Interpreter(program).run(codes, T))


def test_export_compacts_a_run_by_default_and_keeps_every_channel_when_asked(tmp_path, capsys):
    """Gate biases spread over +-40 leave some channels that no input can open: export removes them
    (same logits), --no-compact keeps them."""
    from spquant.train import load_config, train

    cfg = load_config(
        "demo:spquant",
        [
            "data.dataset='synthetic'",
            "data.train_subset=64",
            "data.test_subset=16",
            "train.max_steps=2",
            "train.batch_size=16",
            "run.progress=false",
            "quant.prune.keep=0.5",
            "quant.prune.init_bias=0.0",
            "quant.prune.init_spread=80.0",
            "quant.prune.spatial_gate=false",
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    small, full = tmp_path / "small.spq", tmp_path / "full.spq"
    assert main(["export", str(tmp_path / "run"), "-o", str(small)]) == 0
    assert "channels kept" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "-o", str(full), "--no-compact"]) == 0
    a, b = load(small), load(full)
    assert a.weight_params() < b.weight_params() and "compaction" in a.meta and "compaction" not in b.meta
    codes = np.random.RandomState(0).randint(0, 256, size=(8, *b.input["shape"]))
    T = cfg.model.T
    assert np.array_equal(Interpreter(a).run(codes, T), Interpreter(b).run(codes, T, path="reference"))
