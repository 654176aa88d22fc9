"""spquant train -> eval -> report end to end on a tiny run, help texts, the demo smoke test."""

import json
from pathlib import Path

import pytest

from spquant.cli import main


def test_train_eval_report(tmp_path, tiny_toml, capsys):
    cfg = str(tiny_toml(mode="fp32", every=3))
    runs = []
    for mode in ("fp32", "quant"):
        out = tmp_path / mode
        assert (
            main(
                ["train", "--config", cfg, "--out", str(out), "--set", f"quant.mode={mode}", "--no-progress"]
            )
            == 0
        )
        runs.append(str(out))
        for f in ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "run.json"):
            assert (out / f).is_file(), f
        kinds = {json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()}
        assert kinds == {"train", "eval", "final"}
    capsys.readouterr()

    assert main(["eval", runs[1], "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    run = json.loads((tmp_path / "quant" / "run.json").read_text())["metrics"]
    assert ev["accuracy"] == run["test_accuracy"] and ev["samples"] == 24
    assert main(["eval", runs[1], "--checkpoint", "--data", "test_subset=12"]) == 0
    assert "on 12 samples" in capsys.readouterr().out

    md = tmp_path / "rep" / "report.md"
    assert main(["report", *runs, "--out", str(md)]) == 0
    text = capsys.readouterr().out
    assert "| fp32 | 32 / 32 |" in text and "| quant | 2 / 1.58 |" in text
    assert md.is_file() and (tmp_path / "rep" / "report.png").is_file()
    q = json.loads((tmp_path / "quant" / "run.json").read_text())["metrics"]
    f = json.loads((tmp_path / "fp32" / "run.json").read_text())["metrics"]
    assert q["membrane_bits"] == 2 and f["membrane_bits"] == 32 and q["total_mb"] < f["total_mb"]
    assert q["neurons"] == f["neurons"] == 4 * 8 * 8  # one LIF layer of 4 channels at 8x8


def test_errors_are_clean(tmp_path, capsys):
    assert main(["train", "--config", "mnsit", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'mnist'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a finished spquant run" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished spquant run" in capsys.readouterr().err


def test_no_data_root_is_a_clean_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """Without data.root and $SPQUANT_DATA the error names both, and no half-made run folder is left."""
    monkeypatch.delenv("SPQUANT_DATA", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist:quant", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "SPQUANT_DATA" in err and "mnist" in err
    assert not out.exists()
    monkeypatch.setenv("SPQUANT_DATA", str(tmp_path / "nowhere"))
    assert main(["train", "--config", "mnist:quant", "--out", str(out), "--no-progress"]) == 2
    assert str(tmp_path / "nowhere" / "mnist") in capsys.readouterr().err
    assert not out.exists()


def test_data_root_resolution(tmp_path, monkeypatch):
    from spquant.data.roots import DataRootError, data_root

    monkeypatch.delenv("SPQUANT_DATA", raising=False)
    with pytest.raises(DataRootError, match="data.root.*SPQUANT_DATA"):
        data_root("cifar10")
    monkeypatch.setenv("SPQUANT_DATA", str(tmp_path))
    assert data_root("cifar10") == tmp_path / "cifar10"
    assert data_root("mnist-dvs") == tmp_path / "mnist"  # the emulator reads MNIST's files
    assert data_root("cifar10", "/elsewhere/c10") == Path("/elsewhere/c10")  # data.root wins


def test_library_and_recipes_never_point_into_shared():
    import re

    root = Path(__file__).resolve().parents[2] / "spquant"
    bad = [
        f"{p.relative_to(root)}:{i + 1}"
        for p in [*root.rglob("*.py"), *root.rglob("*.toml")]
        for i, line in enumerate(p.read_text().splitlines())
        if re.search(r"[./\\]shared[/\\\"']", line)
    ]
    assert not bad, f"paths into a shared data folder: {bad}"


@pytest.mark.parametrize("cmd", ["train", "eval", "report", "demo"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert {"train": "--resume", "eval": "RUN_DIR", "report": "drop", "demo": "MNIST"}[cmd] in text.replace(
        "run_dir", "RUN_DIR"
    )


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--test-subset",
                "50",
                "--no-progress",
                "--modes",
                "fp32,quant",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| demo:fp32 | fp32 | 32 / 32 |" in text and "| demo:quant | quant | 2 / 1.58 |" in text
    assert "demo finished in" in text and (out / "report.md").is_file()


def test_spquant_mode_trains_with_gate_loss(tmp_path, tiny_toml):
    out = tmp_path / "sp"
    assert (
        main(
            [
                "train",
                "--config",
                str(tiny_toml(mode="spquant", every=0)),
                "--out",
                str(out),
                "--set",
                "train.max_steps=3",
                "--set",
                'model.plan=[4, 8, "A"]',
                "--no-progress",
            ]
        )
        == 0
    )
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("gate_loss" in r for r in recs if r["kind"] == "train")
    m = json.loads((out / "run.json").read_text())["metrics"]
    assert m["mode"] == "spquant" and m["flops_reduction"] > 0 and 0 <= m["skipped_update_fraction"] <= 1
