"""Two processes with gloo on CPU through torchrun: parameters stay identical across ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _torchrun_train(config: str, out: Path, sets: list[str] = ()) -> dict:
    """`spquant train` on 2 CPU processes; returns the run's metrics (fails with both ranks' output)."""
    env = dict(
        os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spquant",
    ]
    cmd += ["train", "--config", config, "--out", str(out), "--no-progress", "--device", "cpu"]
    cmd += [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((out / "run.json").read_text())["metrics"]


def test_two_process_ddp_stays_in_sync(tmp_path, tiny_toml):
    out = tmp_path / "ddp"
    m = _torchrun_train(str(tiny_toml(mode="quant", every=0)), out)
    assert m["world_size"] == 2
    assert m["ddp_max_param_diff"] == 0.0  # every parameter of rank 1 equals rank 0's, bit for bit
    # 48 samples, 2 ranks x batch 8 -> 3 steps per epoch, 2 epochs
    assert m["steps"] == 6
    assert load_file(str(out / "model.safetensors"))  # only rank 0 wrote, once
    assert not list(out.glob("*rank*"))


def test_two_process_ddp_detection(tmp_path):
    """The detection task through the same DDP path: ranks stay in sync, rank 0 writes the run."""
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
    m = _torchrun_train("detect-moving-digits:quant", tmp_path / "ddp", sets)
    assert m["world_size"] == 2 and m["task"] == "detect" and 0.0 <= m["mAP50"] <= 1.0
    assert m["ddp_max_param_diff"] == 0.0
    assert m["steps"] == 2  # 16 samples, 2 ranks x batch 4 -> 2 steps
