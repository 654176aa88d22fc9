"""spquant export / spquant run."""

from __future__ import annotations

import json
import sys
import types

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
        assert main(["run", str(tmp_path / "m.spq"), "--data", str(tmp_path / "d.npz"), "--T", "2", "--path", path, "--batch-size", "16"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["samples"] == 40
        want = (Interpreter(load(tmp_path / "m.spq")).predict(x, T=2) == y).mean()
        assert res["accuracy"] == pytest.approx(want)
        assert res["file"]["file_bytes"] == (tmp_path / "m.spq").stat().st_size
    assert res["ops_per_sample"]["dense_macs"] > res["ops_per_sample"]["sops"] > 0


@pytest.mark.parametrize("loader", ["load_model", "load_run"])
def test_export_run_folder(loader, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = tiny_model("vgg", size=16).eval()
    fake = types.ModuleType("spquant.train")
    if loader == "load_model":
        fake.load_model = lambda run: model
    else:
        fake.load_run = lambda run: {"model": model, "config": None}
    monkeypatch.setitem(sys.modules, "spquant.train", fake)
    out = tmp_path / "m.spq"
    assert main(["export", str(tmp_path), "-o", str(out), "--input-shape", "1,16,16"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["file_bytes"] == out.stat().st_size
    assert load(out).input["shape"] == [1, 16, 16]


def test_export_without_loader(tmp_path, monkeypatch):
    fake = types.ModuleType("spquant.train")
    monkeypatch.setitem(sys.modules, "spquant.train", fake)
    with pytest.raises(SystemExit, match="checkpoint loader"):
        main(["export", str(tmp_path), "-o", str(tmp_path / "m.spq")])
