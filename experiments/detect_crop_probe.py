"""Is the moving-digits class information in the event frames at all? A plain (non-spiking) CNN
classifies 16x16 crops centred on each ground-truth box (event counts summed over T).

    OMP_NUM_THREADS=1 python experiments/detect_crop_probe.py [--steps 400] [--set data.options.downsample=1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from spquant.train import load_config  # noqa: E402
from spquant.train.data import load_split  # noqa: E402


def crops(ds, size: int, time_bins: bool):
    xs, ys = [], []
    for i in range(len(ds)):
        frames, boxes = ds[i]
        f = frames if time_bins else frames.sum(0, keepdim=True)
        f = f.reshape(-1, *f.shape[-2:])
        pad = torch.nn.functional.pad(f, (size, size, size, size))
        for b in boxes:
            cx, cy = int((b[0] + b[2]) / 2) + size, int((b[1] + b[3]) / 2) + size
            xs.append(pad[:, cy - size // 2 : cy + size // 2, cx - size // 2 : cx + size // 2])
            ys.append(int(b[4]))
    return torch.stack(xs), torch.tensor(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--time-bins", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument(
        "--spiking",
        default=None,
        help="quant mode of the recipe's spiking backbone (fp32|quant) instead of the CNN",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config("detect-moving-digits:fp32", a.set)
    spiking = a.spiking is not None
    xtr, ytr = crops(load_split(cfg, "train").dataset, a.size, a.time_bins or spiking)
    xte, yte = crops(load_split(cfg, "test").dataset, a.size, a.time_bins or spiking)
    c = xtr.shape[1]
    if spiking:  # the detector's backbone on [T, B, 2, s, s] crops, mean spike rate -> linear
        from spquant.models import QuantSpec, SpikingYOLO

        T = cfg.model.T
        xtr, xte = (v.reshape(len(v), T, 2, a.size, a.size).transpose(0, 1) for v in (xtr, xte))
        plan = [p for p in cfg.model.plan]
        yolo = SpikingYOLO(10, input_size=(a.size, a.size), plan=plan, spec=QuantSpec(mode=a.spiking))
        feat = yolo.features

        class Probe(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = feat
                self.fc = nn.Linear(yolo.head.in_channels, 10)

            def forward(self, x):
                return self.fc(self.features(x).mean((0, 3, 4)))

        net = Probe()
    else:
        net = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (a.size // 4) ** 2, 10),
        )
    batch = (lambda x, i: x[:, i]) if spiking else (lambda x, i: x[i])
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    g = np.random.default_rng(0)
    for _ in range(a.steps):
        idx = torch.from_numpy(g.integers(0, len(ytr), 64))
        loss = nn.functional.cross_entropy(net(batch(xtr, idx)), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
        acc_tr = (net(batch(xtr, slice(0, 2000))).argmax(1) == ytr[:2000]).float().mean().item()
    print(
        f"crops {tuple(xtr.shape)} train boxes {len(ytr)}; test accuracy {acc:.3f} (train {acc_tr:.3f}) after {a.steps} steps"
    )


if __name__ == "__main__":
    main()
