"""Tiny models trained in the test itself, and the data they train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spquant.models import VGG9, QuantSpec, ResNet19

ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


def synthetic_digits(n: int, size: int = 28, seed: int = 0, classes: int = 10):
    """uint8 images [n, 1, size, size]: per-class random blob prototypes plus noise; labels [n]."""
    g = np.random.default_rng(1234)
    protos = (g.random((classes, size, size)) > 0.8).astype(np.float64)
    r = np.random.default_rng(seed)
    y = r.integers(0, classes, n)
    x = protos[y] * r.uniform(0.6, 1.0, (n, 1, 1)) + r.random((n, size, size)) * 0.35
    return np.clip(x * 255, 0, 255).astype(np.uint8)[:, None], y.astype(np.int64)


def real_mnist(n_train: int, n_test: int):
    """Real MNIST from ../shared/data/mnist (None when absent)."""
    from spquant.data.idx import read_idx

    files = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    if not all((MNIST_DIR / f).is_file() for f in files):
        return None
    xtr, ytr, xte, yte = (read_idx(MNIST_DIR / f) for f in files)
    return (
        xtr[:n_train, None],
        ytr[:n_train].astype(np.int64),
        xte[:n_test, None],
        yte[:n_test].astype(np.int64),
    )


def tiny_model(kind: str = "vgg", size: int = 28, **spec_kw):
    mode = "spquant" if "prune" in spec_kw else "quant"
    spec_kw.setdefault("learn_threshold", "layer" if mode == "spquant" else False)
    spec = QuantSpec(mode=mode, **spec_kw)
    if kind == "vgg":
        return VGG9(10, in_channels=1, input_size=size, spec=spec, plan=(8, "A", 16, "A"))
    if kind == "resnet":
        return ResNet19(10, in_channels=1, input_size=(size, size), width=1 / 16, spec=spec, blocks=(1, 1, 1))
    raise ValueError(kind)


def train(
    model,
    x_u8: np.ndarray,
    y: np.ndarray,
    steps: int,
    T: int = 2,
    batch: int = 32,
    lr: float = 5e-3,
    seed: int = 0,
):
    """A few Adam steps on mean-over-T cross entropy; returns the model in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    g = np.random.default_rng(seed)
    for _ in range(steps):
        idx = g.integers(0, len(y), batch)
        xb = torch.from_numpy(x_u8[idx]).float().div(255)
        out = model(xb[None].expand(T, *xb.shape))
        loss = torch.nn.functional.cross_entropy(out.mean(0), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def repeat(x_u8: np.ndarray, T: int) -> torch.Tensor:
    """Direct encoding: float images (pixel / 255) repeated T times -> [T, B, C, H, W]."""
    xb = torch.from_numpy(x_u8).float().div(255)
    return xb[None].expand(T, *xb.shape).contiguous()
