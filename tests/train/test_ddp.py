"""Two processes with gloo on CPU through torchrun: parameters stay identical across ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file


def test_two_process_ddp_stays_in_sync(tmp_path, tiny_toml):
    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    cfg = str(tiny_toml(mode="quant", every=0))
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spquant",
        "train",
        "--config",
        cfg,
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out / "run.json").read_text())["metrics"]
    assert m["world_size"] == 2
    assert m["ddp_max_param_diff"] == 0.0  # every parameter of rank 1 equals rank 0's, bit for bit
    # 48 samples, 2 ranks x batch 8 -> 3 steps per epoch, 2 epochs
    assert m["steps"] == 6
    assert load_file(str(out / "model.safetensors"))  # only rank 0 wrote, once
    assert not list(out.glob("*rank*"))


def test_two_process_ddp_detection(tmp_path):
    """The detection task through the same DDP path: ranks stay in sync, rank 0 writes the run."""
    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    sets = [
        "data.train_subset=16",
        "data.test_subset=4",
        "data.options.canvas=32",
        "data.options.downsample=1",
        "data.options.steps=4",
        "data.options.digits=[1, 1]",
        "model.T=2",
        "model.plan=[4, 'M', 8, 'M', 8]",
        "train.epochs=1",
        "train.batch_size=4",
        "run.tensorboard=false",
        f"data.cache={tmp_path / 'cache'}",
    ]
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spquant",
        "train",
        "--config",
        "detect-moving-digits:quant",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    cmd += [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out / "run.json").read_text())["metrics"]
    assert m["world_size"] == 2 and m["task"] == "detect" and 0.0 <= m["mAP50"] <= 1.0
    assert m["ddp_max_param_diff"] == 0.0
    assert m["steps"] == 2  # 16 samples, 2 ranks x batch 4 -> 2 steps
