import math

import torch

from spquant.models import VGG9, QuantSpec
from spquant.train.loss import mean_threshold, resolve_phi, tet_loss


def hand_tet(o, y, lam, phi):
    T, B, K = len(o), len(o[0]), len(o[0][0])
    ce_t, mse_t = [], []
    for t in range(T):
        ce = 0.0
        for b in range(B):
            z = o[t][b]
            lse = math.log(sum(math.exp(v) for v in z))
            ce += lse - z[y[b]]
        ce_t.append(ce / B)
        mse_t.append(sum((o[t][b][k] - phi) ** 2 for b in range(B) for k in range(K)) / (B * K))
    return (1 - lam) * sum(ce_t) / T + lam * sum(mse_t) / T


def test_tet_matches_hand_computation():
    o = [
        [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]],
        [[-0.2, 0.3, 0.1], [2.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [-1.0, 3.0, 0.5]],
    ]
    y = [2, 0]
    for lam, phi in [(0.0, 1.0), (0.05, 1.0), (0.9, 1.0), (0.5, 0.7), (1.0, 1.0)]:
        got = float(tet_loss(torch.tensor(o, dtype=torch.float64), torch.tensor(y), lam, phi))
        assert abs(got - hand_tet(o, y, lam, phi)) < 1e-12, (lam, phi)


def test_tet_is_mean_of_per_step_ce():
    torch.manual_seed(0)
    o, y = torch.randn(4, 5, 10), torch.randint(0, 10, (5,))
    per_step = torch.stack([torch.nn.functional.cross_entropy(o[t], y) for t in range(4)]).mean()
    assert torch.allclose(tet_loss(o, y, 0.0), per_step)


def test_phi_threshold_trains_thresholds():
    net = VGG9(
        10,
        1,
        (16, 16),
        width=0.0625,
        spec=QuantSpec(mode="quant", learn_threshold="layer"),
        plan=(8, "A", 8, "A"),
    )
    phi = resolve_phi("threshold", net)
    assert torch.allclose(phi, mean_threshold(net)) and float(phi.detach()) == 1.0
    loss = tet_loss(net(torch.rand(2, 3, 1, 16, 16)), torch.tensor([1, 2, 3]), lam=1.0, phi=phi)
    loss.backward()
    assert all(m.threshold.grad is not None for m in net.lif_layers())
    assert resolve_phi("one", net) == 1.0 and resolve_phi(0.5, net) == 0.5
