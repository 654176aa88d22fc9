"""benchmarks/gpu_check.py: its checks run on the CPU too, and it fails loudly on a mismatch."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")


def test_checks_pass_on_the_cpu(one_thread, capsys):
    assert gpu_check.main(["--device", "cpu", "--quick", "--no-timing"]) == 0
    assert "OK" in capsys.readouterr().out


def test_without_cuda_it_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert gpu_check.main(["--require-gpu"]) == 3
    assert gpu_check.main(["--device", "cuda"]) == 3


def test_a_wrong_kernel_makes_it_fail(monkeypatch, one_thread, capsys):
    from spquant.neuron.fused import lif_fused

    def off_by_one_spike(*args):
        s, m = lif_fused(*args)
        flip = torch.zeros_like(s)
        flip.view(-1)[0] = 1
        return (s - flip).abs(), m

    monkeypatch.setattr(gpu_check, "lif_fused", off_by_one_spike)
    assert gpu_check.main(["--device", "cpu", "--quick", "--no-timing"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_fused_lif_allocates_on_the_input_device():
    """On the meta device (shapes only) any CPU allocation inside the kernel would raise."""
    from spquant.neuron.fused import lif_fused
    from spquant.quant import IntegerMembrane

    x = torch.randn(3, 2, 4, 5, 5, device="meta", requires_grad=True)
    th = torch.ones(4, 1, 1, device="meta", requires_grad=True)
    g = torch.ones(3, 2, 4, 1, 1, device="meta", requires_grad=True)
    s, m = lif_fused(x, th, 0.5, IntegerMembrane(), None, g, None, True)
    (s.sum() + m.sum()).backward()
    assert s.device.type == m.device.type == x.grad.device.type == th.grad.device.type == "meta"
    assert g.grad.device.type == "meta"
