import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = """
name = "tiny"
[model]
name = "vgg9"
plan = [4, "A"]
input = [8, 8]
in_channels = 1
classes = 3
T = 2
[quant]
mode = "{mode}"
[data]
dataset = "synthetic"
train_subset = 48
test_subset = 24
[train]
epochs = 2
batch_size = 8
lr = 1e-2
seed = 3
[run]
log_every = 2
checkpoint_every = {every}
progress = false
tensorboard = false
threads = 1
"""


@pytest.fixture
def tiny_toml(tmp_path):
    def make(mode="quant", every=1, name="tiny.toml"):
        p = tmp_path / name
        p.write_text(TINY.format(mode=mode, every=every))
        return p

    return make


def cli_env(env=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("SPQUANT_TEST_KILL_AT", None)
    e.pop("SPQUANT_TEST_KILL_AFTER_STEP", None)
    e.update(env or {})
    return e


def run_cli(args, env=None, **kw):
    """Run ``python -m spquant ARGS`` in a fresh process (from the project root)."""
    return subprocess.run(
        [sys.executable, "-m", "spquant", *args],
        cwd=ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def popen_cli(args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "spquant", *args],
        cwd=ROOT,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    return run_cli


@pytest.fixture(name="popen_cli")
def popen_cli_fixture():
    return popen_cli
