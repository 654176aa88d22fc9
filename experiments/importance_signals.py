"""Which channel-importance signal gives the gate a discriminative target?

Trains one Quant-SNN (no gates) on emulated-event MNIST at a small budget, then, for every
candidate importance signal, gates *every* conv layer with the oracle top-k target computed from
that signal (keep the ``keep`` fraction of output channels per sample and time step with the
largest importance) and measures test accuracy. A signal is a good gate target when the oracle
mask it defines costs little accuracy at a given kept fraction: that is what the predictor is
asked to imitate. Also reports how many channels the 0.85 mass rule keeps with each signal (a
signal whose mass is spread evenly over channels makes the mass rule keep nearly all of them).

    python experiments/importance_signals.py --train 3000 --test 1000 --out runs/importance

Signals (per sample, time step and output channel, from the UNgated current I = BN(Conv(s))):
``max_abs`` max over space of |I| (the method's rule), ``l1`` mean |I|, ``pos_l1`` mean max(I, 0)
(only positive current pushes towards a spike), ``spikes`` the channel's spike count when the
layer runs ungated, ``random`` a random ranking (the floor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from spquant.layers import ConvBNLIF  # noqa: E402
from spquant.prune import mass_target  # noqa: E402
from spquant.train import load_config, train  # noqa: E402
from spquant.train.data import load_split  # noqa: E402

SIGNALS = ("max_abs", "l1", "pos_l1", "spikes", "random")


def topk_mask(imp: torch.Tensor, keep: float) -> torch.Tensor:
    """{0,1} over the last dim: the ceil(keep * C) largest entries (at least one)."""
    C = imp.shape[-1]
    k = max(1, min(C, int(round(keep * C))))
    idx = imp.topk(k, dim=-1).indices
    return torch.zeros_like(imp).scatter(-1, idx, 1.0)


def importance(signal: str, mod: ConvBNLIF, i: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[T, B, C] importance of the ungated current ``i`` [T, B, C, H, W]."""
    if signal == "max_abs":
        return i.abs().amax(dim=(3, 4))
    if signal == "l1":
        return i.abs().mean(dim=(3, 4))
    if signal == "pos_l1":
        return i.clamp_min(0).mean(dim=(3, 4))
    if signal == "spikes":
        saved = mod.neuron.prior if hasattr(mod.neuron, "prior") else None
        s = mod.neuron(i)
        if saved is not None:
            mod.neuron.prior = saved
        return s.sum(dim=(3, 4)).float() + 1e-3 * i.clamp_min(0).mean(dim=(3, 4))  # tie-break
    if signal == "random":
        return torch.rand(i.shape[:3], generator=gen)
    raise ValueError(signal)


class OracleGate:
    def __init__(self, model, signal: str, keep: float):
        self.signal, self.keep = signal, keep
        self.gen = torch.Generator().manual_seed(0)
        self.kept = []
        self.mass_kept = []
        self.handles = []
        for m in model.modules():
            if isinstance(m, ConvBNLIF):
                m.forward = self._make(m)
                self.handles.append(m)

    def _make(self, mod):
        def forward(x):
            i = mod.current(x)
            imp = importance(self.signal, mod, i, self.gen)
            g = topk_mask(imp, self.keep) if self.keep < 1 else torch.ones_like(imp)
            self.kept.append(float(g.mean()))
            self.mass_kept.append(float(mass_target(imp, 0.85).mean()))
            return mod.neuron(i, gate=g[..., None, None])

        return forward

    def close(self):
        for m in self.handles:
            del m.forward


@torch.no_grad()
def accuracy(model, split, T, n, bs=250):
    correct = 0
    for s in range(0, n, bs):
        x, y = split.batch(torch.arange(s, min(s + bs, n)), T)[:2]
        correct += int((model(x).mean(0).argmax(-1) == y).sum())
    return correct / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--keeps", default="0.7,0.5,0.35")
    ap.add_argument(
        "--source", default="embedded", help="data.source: embedded (6,000/1,000 bundled digits) or full"
    )
    ap.add_argument("--root", default="/work/shared/data/mnist", help="MNIST IDX folder (source full)")
    ap.add_argument("--out", default="runs/importance")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = [
        "model.plan=none",
        "model.input=[32, 32]",
        "model.width=0.125",
        "data.resize=crop",
        "train.lr=3e-3",
        "train.batch_size=64",
        "train.lam=0.05",
        f"data.train_subset={args.train}",
        "train.epochs=1",
        "run.threads=1",
        f"data.root={args.root}",
        f"data.source={args.source}",
        "train.seed=0",
    ]
    cfg = load_config("mnist-dvs:quant", sets)
    out = Path(args.out)
    t0 = time.time()
    res = train(cfg, None, progress=False)
    model = res.model.eval()
    test = load_split(cfg, "test")
    T = cfg.model.T
    n = min(args.test, len(test))
    base = accuracy(model, test, T, n)
    rows = {"ungated": base, "train_seconds": time.time() - t0, "train_images": args.train, "test_images": n}
    print(f"ungated quant model: {base:.4f}", flush=True)
    for keep in [float(k) for k in args.keeps.split(",")]:
        for sig in SIGNALS:
            og = OracleGate(model, sig, keep)
            acc = accuracy(model, test, T, n)
            og.close()
            mk = sum(og.mass_kept) / len(og.mass_kept)
            rows[f"{sig}@{keep}"] = {"accuracy": acc, "kept": sum(og.kept) / len(og.kept), "mass85_kept": mk}
            print(f"keep {keep:4.2f} {sig:8s} acc {acc:.4f}  (mass-0.85 rule keeps {mk:.3f})", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "importance.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
