"""``spquant run --data``: the run's own preprocessing (stored in the .spq file) applied to any data the
recipe system loads; ``spquant export`` refuses runs whose event frames were area-resized."""

from __future__ import annotations

import json

import pytest

from spquant.cli import main

SETS = [
    "train.max_steps=2",
    "train.batch_size=4",
    "data.train_subset=8",
    "data.test_subset=4",
    "model.T=2",
    "model.plan=[4, 'A']",
    "run.progress=false",
    "run.tensorboard=false",
    "run.threads=1",
]


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    from tests.test_cli_recipes import _write_mnist

    _write_mnist(tmp_path / "data" / "mnist")
    monkeypatch.setenv("SPQUANT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _train(tmp_path, name, *extra):
    args = ["train", "--config", "mnist-dvs:quant", "--out", str(tmp_path / name), "--no-progress"]
    for s in SETS + [f"data.cache={tmp_path / 'cache'}", *extra]:
        args += ["--set", s]
    return main(args)


def test_event_run_exports_and_runs_on_named_data(tmp_path, mnist_root, capsys):
    assert _train(tmp_path, "dvs") == 0  # 34x34 sensor centre-cropped to 32x32: integer counts
    spq = str(tmp_path / "dvs.spq")
    assert main(["export", str(tmp_path / "dvs"), "-o", spq]) == 0
    capsys.readouterr()
    for data in (
        [],
        ["--data", "mnist-dvs"],
        ["--data", "mnist-dvs:spquant"],
        ["--data", "mnist-dvs", "--set", "data.test_subset=6"],
    ):
        assert main(["run", spq, *data]) == 0, data
        r = json.loads(capsys.readouterr().out)
        assert r["samples"] == (6 if "data.test_subset=6" in data else 4) and 0.0 <= r["accuracy"] <= 1.0
        assert r["T"] == 2  # the run's T, not a command-line default
    # a data set the recipe system cannot find is a clean error naming where it looked
    assert main(["run", spq, "--data", "mnist-dvs", "--set", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["run", spq, "--data", "no-such-thing"]) == 2
    assert "no .npz file, recipe or dataset name" in capsys.readouterr().err


def test_export_refuses_area_resized_event_frames(tmp_path, mnist_root, capsys):
    assert _train(tmp_path, "resized", "data.resize=resize") == 0
    assert main(["export", str(tmp_path / "resized"), "-o", str(tmp_path / "r.spq")]) == 2
    err = capsys.readouterr().err
    assert "area-resized event frames" in err and "Traceback" not in err
    assert not (tmp_path / "r.spq").exists()
    # 'pad' never resizes: a 34x34 sensor cannot be padded to 32x32, and training says so up front
    assert _train(tmp_path, "padded", "data.resize=pad") == 2
    assert "cannot pad 34x34" in capsys.readouterr().err
    assert not (tmp_path / "padded").exists()
