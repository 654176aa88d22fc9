"""Exact resume: a run killed with SIGKILL after a step, between the two files of a checkpoint and
in the middle of writing one, then resumed, ends with the same weights, bit for bit, as a run
that was never interrupted."""

import json
import signal

import torch
from safetensors.torch import load_file


def test_resume_after_sigkill_is_bit_exact(tmp_path, tiny_toml, run_cli, popen_cli):
    cfg = str(tiny_toml(mode="quant", every=1))  # 48 samples / batch 8 = 6 steps per epoch, 2 epochs
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = popen_cli(["train", "--config", cfg, "--out", ref_dir, "--no-progress"])  # in parallel

    r = run_cli(
        ["train", "--config", cfg, "--out", run_dir, "--no-progress"],
        env={"SPQUANT_TEST_KILL_AFTER_STEP": "4"},
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    # killed after step 5's tensors were written but before its JSON (the commit record)
    r = run_cli(
        ["train", "--config", cfg, "--out", run_dir, "--resume", "--no-progress"],
        env={"SPQUANT_TEST_KILL_AT": "between-files"},
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    ck = tmp_path / "run" / "checkpoints"
    assert (ck / "step-00000005.safetensors").exists() and not (ck / "step-00000005.json").exists()
    # killed halfway through writing a tensor file (left as a temp file, never as the target)
    r = run_cli(
        ["train", "--config", cfg, "--out", run_dir, "--resume", "--no-progress"],
        env={"SPQUANT_TEST_KILL_AT": "mid-write"},
    )
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    r = run_cli(["train", "--config", cfg, "--out", run_dir, "--resume", "--no-progress"])
    assert r.returncode == 0, r.stdout + r.stderr

    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 5
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = json.loads((tmp_path / "ref" / "run.json").read_text())["metrics"]
    rb = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    assert ra["steps"] == rb["steps"] == 12 and ra["test_accuracy"] == rb["test_accuracy"]
    # the metrics log has each step once
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert steps == sorted(set(steps))


def test_existing_run_needs_resume_and_same_config(tmp_path, tiny_toml, capsys):
    from spquant.cli import main

    cfg = str(tiny_toml(mode="fp32", every=0))
    out = str(tmp_path / "run")
    base = ["train", "--config", cfg, "--out", out, "--no-progress", "--set", "train.max_steps=2"]
    assert main(base) == 0
    assert main(base) == 2 and "already holds a run; use --resume" in capsys.readouterr().err
    assert main(base + ["--resume", "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "train.lr" in err
    assert main(base + ["--resume"]) == 0  # finished run: nothing left to do, same result
