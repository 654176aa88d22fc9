"""Memory as deployed: minimal widths, agreement with the bytes the .spq file holds, the cost CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spquant.cli import main
from spquant.deploy import fold_model
from spquant.deploy.memory import deployed_memory, signed_bits
from spquant.deploy.targets.spq import file_report, save
from tests.deploy.helpers import tiny_model


def test_signed_bits_every_width():
    for b in range(1, 17):
        lo, hi = -(2 ** (b - 1)), 2 ** (b - 1) - 1
        assert signed_bits(np.arange(lo, hi + 1)) == b
        assert signed_bits(np.array([hi + 1])) == b + 1
        assert signed_bits(np.array([lo - 1])) == b + 1
    assert signed_bits(np.array([], dtype=np.int64)) == 1


@pytest.mark.parametrize(
    "spec", [dict(), dict(weight_bits=1, last_bits=1, weight_scale="lsq-channel"), dict(weight_bits=4)]
)
def test_deployed_counts_match_the_file(spec, tmp_path):
    torch.manual_seed(0)
    model = tiny_model("vgg", size=16, **spec).eval()
    program = fold_model(model, (1, 16, 16))
    mem = deployed_memory(program)
    save(program, tmp_path / "m.spq")
    rep = file_report(tmp_path / "m.spq")
    assert mem.weight_bytes == rep["weight_blob_bytes"]  # packed codes: exactly the file's weight blobs
    # fixed-point arrays: never more than the file's int32/int64 storage, and at least 1 bit each
    n_int = sum(a.size for k, a in program.arrays.items() if not k.endswith(".weight"))
    assert n_int / 8 < mem.fixed_point_bytes - mem.by_kind["shifts"] <= rep["fixed_point_param_bytes"]
    # membrane: 8*16*16 + 16*8*8 neurons at 1.6 bits; FP32: the same network with 32-bit everything
    neurons = 8 * 16 * 16 + 16 * 8 * 8
    assert mem.membrane_bytes == pytest.approx(neurons * 1.6 / 8)
    weights = sum(a.size for k, a in program.arrays.items() if k.endswith(".weight"))
    channels = 8 + 16 + 10
    assert mem.fp32_bytes == 4 * (weights + 2 * channels + 2 + neurons)  # 2 layer thresholds
    assert mem.reduction == pytest.approx(mem.fp32_bytes / mem.total_bytes)


def test_cost_cli_reports_deployed_memory(capsys, tmp_path):
    args = ["cost", "--model", "vgg9", "--input", "1x16x16", "--width", "0.125", "--json"]
    assert main(args + ["--wbits", "1", "--last-bits", "1"]) == 0
    binary = json.loads(capsys.readouterr().out)["deployed"]
    assert main(args + ["--wbits", "2", "--last-bits", "2"]) == 0
    ternary = json.loads(capsys.readouterr().out)["deployed"]
    assert binary["by_kind"]["weights"] < ternary["by_kind"]["weights"]
    assert 20 > ternary["reduction"] > 15  # ternary codes and membrane at 1.6 bits: never past 32/1.6
    assert binary["reduction"] > ternary["reduction"]
    assert main(["cost", "--model", "vgg9", "--wbits", "32", "--ubits", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deployed"] is None
    program = fold_model(tiny_model("vgg", size=16).eval(), (1, 16, 16))
    save(program, tmp_path / "m.spq")
    assert main(["cost", "--spq", str(tmp_path / "m.spq")]) == 0
    assert "memory as deployed" in capsys.readouterr().out
    (tmp_path / "bad.spq").write_bytes(b"nope")
    assert main(["cost", "--spq", str(tmp_path / "bad.spq")]) == 2
