import os
import subprocess
import sys

import torch

from spquant import perf


def test_configure_sets_threads_and_reports():
    before = torch.get_num_threads()
    try:
        s = perf.configure(fast=True, threads=1)
        assert s == {"fast": True, "threads": 1, "tcmalloc": perf.tcmalloc_active(), "compile": False}
        assert torch.get_num_threads() == 1
        assert perf.configure(fast=False)["fast"] is False
    finally:
        torch.set_num_threads(before)


def test_configure_from_env_only_when_asked(monkeypatch):
    monkeypatch.delenv("SPQUANT_FAST", raising=False)
    monkeypatch.delenv("SPQUANT_COMPILE", raising=False)
    assert perf.configure_from_env() is None
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SPQUANT_FAST", "1")
        monkeypatch.setenv("SPQUANT_THREADS", "1")
        assert perf.configure_from_env()["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_compile_switch_from_env(monkeypatch):
    from spquant.neuron import fused

    monkeypatch.delenv("SPQUANT_FAST", raising=False)
    monkeypatch.setenv("SPQUANT_COMPILE", "1")
    try:
        assert perf.configure_from_env()["compile"] is True and fused.kernels_compiled()
        assert perf.configure(fast=False, compile=False)["compile"] is False
    finally:
        fused.compile_kernels(False)


def test_compact_spikes_exported():
    from spquant.neuron.fused import compact_spikes

    assert perf.compact_spikes is compact_spikes


def test_suggested_threads_in_range():
    assert 1 <= perf.suggested_threads() <= (os.cpu_count() or 1)


def test_tcmalloc_path_is_real_or_none():
    p = perf.tcmalloc_path()
    assert p is None or os.path.exists(p)


def test_reexec_with_tcmalloc_preloads_it_when_installed():
    # perf.py loaded on its own (no torch import), as a launcher would do before starting work
    path = perf.__file__
    code = (
        f"import importlib.util as u, os; s = u.spec_from_file_location('p', {path!r}); m = u.module_from_spec(s); "
        "s.loader.exec_module(m); m.reexec_with_tcmalloc(); print(os.environ.get('LD_PRELOAD', ''))"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    expected = perf.tcmalloc_path() or ""
    assert out.stdout.strip() == expected
