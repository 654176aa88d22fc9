"""The linter and the formatter (ruff, configured in pyproject.toml) find nothing to change in the code,
tests, benchmarks and experiments. ruff is part of the ``test`` extra, so a missing ruff is a broken setup, not a skip."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["spquant", "tests", "benchmarks", "experiments"]


def test_ruff_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout + result.stderr
