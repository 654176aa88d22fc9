"""The fast interpreter on time-varying (event-frame) input: every step is a different frame, so
the first layer cannot be computed once and reused. Bit-exact against deploy-sim and the reference."""

import numpy as np
import pytest
import torch

from spquant.deploy import DeploySim, Interpreter, fold_model
from spquant.models import VGG9, QuantSpec

T = 4


def _event_frames(n: int, seed: int) -> np.ndarray:
    """[T, n, 2, 16, 16] integer event counts (0..7), different at every step."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.05, 0.6, (1, n, 2, 1, 1))
    return rng.binomial(7, np.broadcast_to(rate, (T, n, 2, 16, 16))).astype(np.int64)


@pytest.mark.parametrize(
    "mode, prune", [("quant", None), ("spquant", {}), ("spquant", {"learned_gate": False})]
)
def test_fast_path_on_event_frames(mode, prune):
    torch.manual_seed(3)
    spec = QuantSpec(mode=mode, prune=prune) if prune is not None else QuantSpec(mode=mode)
    model = VGG9(4, in_channels=2, input_size=16, spec=spec, plan=(8, "A", 8, "A"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.from_numpy(_event_frames(32, 0)).float()
    y = torch.randint(0, 4, (32,))
    for _ in range(3):  # a few steps so the BN statistics and thresholds are not at their init
        loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    program = fold_model(model, (2, 16, 16), input_bits=3, input_scale=1.0)
    codes = _event_frames(6, 1)
    assert not np.array_equal(codes[0], codes[1])
    env_sim = {
        k: v.numpy().astype(np.int64)
        for k, v in DeploySim(program).run_codes(torch.from_numpy(codes)).items()
    }
    interp = Interpreter(program)
    fast = interp.run_all(codes, path="fast")
    ref = interp.run_all(codes, path="reference")
    assert set(env_sim) == set(fast) == set(ref)
    for name in env_sim:
        assert np.array_equal(env_sim[name], fast[name]), name
        assert np.array_equal(env_sim[name], ref[name]), name
    spikes = sum(int(env_sim[n["output"]].sum()) for n in program.nodes if n["op"] in ("lif", "lif_pruned"))
    assert spikes > 0
