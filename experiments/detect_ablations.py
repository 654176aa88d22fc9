"""Short ablations of the moving-digits detector: what keeps class-aware mAP low?

Each ablation trains the recipe ``detect-moving-digits`` (with overrides) for a fixed number of
optimizer steps with the library's pieces (SpikingYOLO, YOLOLoss, MovingDigits, evaluate_detector)
and appends one JSON line to ``runs/detect-ablations/results.jsonl``: class-aware and class-agnostic
mAP@0.5, COCO mAP, and the class accuracy at the responsible slot of every test box (the direct
measure of "does the head classify", independent of objectness and NMS).

    OMP_NUM_THREADS=1 nice -n 10 python experiments/detect_ablations.py base cls5 --steps 600
    python experiments/detect_ablations.py --list
    python experiments/detect_ablations.py --table          # markdown table of the results file

Besides recipe overrides an ablation may set ``cls_loss`` ('ce' | 'focal'), ``shift`` (random
translation augmentation in pixels, boxes moved with the frames) and ``lr``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from spquant.data.detection import collate_detection  # noqa: E402
from spquant.detect.loss import YOLOLoss, build_targets  # noqa: E402
from spquant.train import load_config  # noqa: E402
from spquant.train.data import load_split  # noqa: E402
from spquant.train.loop import evaluate  # noqa: E402

OUT = ROOT / "runs" / "detect-ablations"

# name: (recipe overrides, extra options)
ABLATIONS: dict[str, tuple[list[str], dict]] = {
    "base": ([], {}),
    "cls5": (["detect.lambda_cls=5.0"], {}),
    "head3": (["model.head_kernel=3"], {}),
    "head3_clsonly": (
        [
            "model.head_kernel=3",
            "detect.lambda_coord=0.0",
            "detect.lambda_obj=0.0",
            "detect.lambda_noobj=0.0",
        ],
        {},
    ),
    "head3_cls5": (["model.head_kernel=3", "detect.lambda_cls=5.0"], {}),
    "pretrain400": ([], {"pretrain": 400}),
    "clsfirst200": ([], {"cls_first": 200}),
    "clsonly": (["detect.lambda_coord=0.0", "detect.lambda_obj=0.0", "detect.lambda_noobj=0.0"], {}),
    "coord1": (["detect.lambda_coord=1.0"], {}),
    "focal": ([], {"cls_loss": "focal"}),
    "lr1e-3": ([], {"lr": 1e-3}),
    "shift4": ([], {"shift": 4}),
    "T8": (["model.T=8"], {}),
    "wide": (["model.plan=[32, 'M', 64, 'M', 128, 'M', 256, 256]"], {}),
    "grid8": (["model.plan=[16, 'M', 32, 'M', 64, 128, 128]"], {}),
    "fullres": (
        [
            "data.options.downsample=1",
            "model.input=[64, 64]",
            "model.plan=[16, 'M', 32, 'M', 64, 'M', 128, 'M', 128]",
            "model.anchors=[[11.0, 20.0], [18.0, 20.0]]",
        ],
        {},
    ),
    "train12k": (["data.train_subset=12000"], {}),
    "grid8_12k": (["model.plan=[16, 'M', 32, 'M', 64, 128, 128]", "data.train_subset=12000"], {}),
    "grid8_12k_cr1": (
        ["model.plan=[16, 'M', 32, 'M', 64, 128, 128]", "data.train_subset=12000", "detect.class_radius=1"],
        {},
    ),
    # Quant / SpQuant: quantization-aware fine-tuning of the FP32 grid8_12k_cr1 model of 2,000 steps
    "grid8_12k_cr1_init": (
        ["model.plan=[16, 'M', 32, 'M', 64, 128, 128]", "data.train_subset=12000", "detect.class_radius=1"],
        {"init": "grid8_12k_cr1-fp32-2000.pt", "lr": 1e-3},
    ),
    "grid8_cr1": (["model.plan=[16, 'M', 32, 'M', 64, 128, 128]", "detect.class_radius=1"], {}),
    "cr1": (["detect.class_radius=1"], {}),
    "fullres8": (
        [
            "data.options.downsample=1",
            "model.input=[64, 64]",
            "model.anchors=[[11.0, 20.0], [18.0, 20.0]]",
        ],
        {},
    ),
}


def shift_batch(x: torch.Tensor, boxes: list, max_shift: int, rng: np.random.Generator):
    """Translate every sample by a random integer (dx, dy) in [-max_shift, max_shift] (zero fill);
    boxes move along and are clipped; boxes left with less than half their area are dropped."""
    T, B, C, H, W = x.shape
    out = torch.zeros_like(x)
    new_boxes = []
    for b in range(B):
        dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        ys, yd = (slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy)))
        xs, xd = (slice(max(0, -dx), W - max(0, dx)), slice(max(0, dx), W - max(0, -dx)))
        out[:, b, :, yd, xd] = x[:, b, :, ys, xs]
        bx = boxes[b].clone()
        area0 = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
        bx[:, [0, 2]] = (bx[:, [0, 2]] + dx).clamp(0, W)
        bx[:, [1, 3]] = (bx[:, [1, 3]] + dy).clamp(0, H)
        area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
        new_boxes.append(bx[area >= 0.5 * area0])
    return out, new_boxes


class FocalClassLoss(YOLOLoss):
    """YOLOLoss with the class cross-entropy replaced by a softmax focal loss (gamma 2)."""

    def forward(self, pred, targets):
        total, parts = super().forward(pred, targets)
        B, A, Gh, Gw, _ = pred.shape
        tg = build_targets(targets, self.anchors, (Gh, Gw), self.stride)
        if tg["index"].numel() == 0:
            return total, parts
        b, a, gy, gx = tg["index"].unbind(1)
        logits = pred[b, a, gy, gx][:, 5:]
        logp = F.log_softmax(logits, -1).gather(1, tg["cls"][:, None])[:, 0]
        focal = (-((1 - logp.exp()) ** 2) * logp).sum()
        ce = -logp.sum()
        total = total + self.lambda_cls * (focal - ce) / B
        parts["cls"] = float(focal.detach()) / B
        return total, parts


def parts_cls(loss_fn, model, x, boxes) -> torch.Tensor:
    """The class cross-entropy alone (summed over responsible slots, divided by the batch)."""
    pred = model(x)
    tg = build_targets(boxes, loss_fn.anchors, pred.shape[2:4], loss_fn.stride)
    b, a, gy, gx = tg["index"].unbind(1)
    return F.cross_entropy(pred[b, a, gy, gx][:, 5:], tg["cls"], reduction="sum") / pred.shape[0]


@torch.no_grad()
def slot_class_accuracy(model, ds, batch_size: int = 64) -> float:
    """Fraction of test boxes whose responsible slot's arg-max class is the box's class."""
    model.eval()
    hit = n = 0
    for start in range(0, len(ds), batch_size):
        x, boxes = collate_detection([ds[i] for i in range(start, min(len(ds), start + batch_size))])
        out = model(x)
        tg = build_targets(boxes, model.anchors, model.grid, model.stride)
        if tg["index"].numel() == 0:
            continue
        b, a, gy, gx = tg["index"].unbind(1)
        hit += int((out[b, a, gy, gx][:, 5:].argmax(1) == tg["cls"]).sum())
        n += len(b)
    return hit / max(n, 1)


def digit_crops(ds, size: int = 16):
    """[T, N, 2, size, size] event-count crops centred on every box of ``ds`` and their classes [N]."""
    xs, ys = [], []
    for i in range(len(ds)):
        frames, boxes = ds[i]
        pad = torch.nn.functional.pad(frames, (size, size, size, size))
        for b in boxes:
            cx, cy = int((b[0] + b[2]) / 2) + size, int((b[1] + b[3]) / 2) + size
            xs.append(pad[:, :, cy - size // 2 : cy + size // 2, cx - size // 2 : cx + size // 2])
            ys.append(int(b[4]))
    return torch.stack(xs, 1), torch.tensor(ys)


def pretrain_backbone(
    model, train_ds, steps: int, seed: int, lr: float = 2e-3, batch: int = 64, log=print
) -> dict:
    """Classification pre-training of the detector's backbone on digit crops (the boxes of the
    training set): backbone spike rate, global mean, a linear classifier (dropped afterwards)."""
    x, y = digit_crops(train_ds)
    fc = torch.nn.Linear(model.head.in_channels, model.num_classes)
    params = list(model.features.parameters()) + list(fc.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    g = np.random.default_rng(seed + 1)
    start, hits, seen = time.time(), 0, 0
    model.train()
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.from_numpy(g.integers(0, len(y), batch))
        logits = fc(model.features(x[:, idx]).mean((0, 3, 4)))
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - 50:
            hits += int((logits.argmax(1) == y[idx]).sum())
            seen += batch
    info = {
        "pretrain_steps": steps,
        "pretrain_s": round(time.time() - start, 1),
        "pretrain_crops": len(y),
        "pretrain_train_acc_last50": hits / max(seen, 1),
    }
    log(f"pre-training: {info}")
    return info


def init_from_weights(model, path: Path, train_ds, calib_batches: int = 8, log=print) -> dict:
    """Start a quantized detector from a trained FP32 one (the weights an ablation run saved), the way
    ``spquant train --init-from RUN`` does (spquant.train.init_from): same-named tensors copied,
    learned quantizer steps initialised from the loaded weights, gates opened, BN statistics
    re-estimated with the quantized network on ``calib_batches`` training batches of 32."""
    from spquant.quant import _ScaledQuantizer
    from spquant.train.init_from import _open_gates, recalibrate_bn

    state, mine = torch.load(path, weights_only=True), model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if mine[k].shape == v.shape:
                mine[k].copy_(v)
            elif k.endswith("threshold") and v.dim() == 0:
                mine[k].copy_(v.expand_as(mine[k]))
            else:
                raise ValueError(
                    f"{path}: tensor {k} has shape {tuple(v.shape)}, here {tuple(mine[k].shape)}"
                )
    for module in model.modules():
        for child in module.children():
            if isinstance(child, _ScaledQuantizer) and hasattr(module, "weight"):
                child.init_from_weight(module.weight)
    if model.spec.pruned:
        _open_gates(model, 3.0)
    batches = (
        collate_detection([train_ds[j] for j in range(i * 32, i * 32 + 32)])[0] for i in range(calib_batches)
    )
    recalibrate_bn(model, batches)
    recs = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines() if line.strip()]
    fp32_s = [
        r["train_s"]
        for r in recs
        if r.get("weights", f"{r['name']}-{r['mode']}-{r['steps']}.pt") == path.name
    ]
    info = {"init_from": path.name, "init_train_s": fp32_s[-1] if fp32_s else None}
    log(f"initialised from {info}")
    return info


def train_detector_steps(cfg: dict, steps: int, opts: dict, seed: int = 0, log=print):
    """Train the recipe's detector for ``steps`` Adam steps (cosine lr); returns (model, data, history).
    ``opts['pretrain']``: steps of backbone pre-training on digit crops first (:func:`pretrain_backbone`);
    ``opts['cls_first']``: the first that many steps train the class loss alone."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_ds, test_ds = load_split(cfg, "train").dataset, load_split(cfg, "test").dataset
    model = cfg.build_model()
    pre = pretrain_backbone(model, train_ds, opts["pretrain"], seed, log=log) if opts.get("pretrain") else {}
    if opts.get("init"):
        pre = init_from_weights(model, OUT / opts["init"], train_ds, log=log)
    loss_cls = FocalClassLoss if opts.get("cls_loss") == "focal" else YOLOLoss
    loss_fn = loss_cls(model.anchors, model.num_classes, model.stride, **cfg.detect.loss_weights())
    lr = opts.get("lr", cfg.train.lr)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gate_w = 0.0
    if model.spec.pruned:
        from spquant.prune import gate_loss, prune_loss_weight

        gate_w = prune_loss_weight(model.spec)
    bs = cfg.train.batch_size
    start, step, history = time.time(), 0, []
    model.train()
    while step < steps:
        perm = rng.permutation(len(train_ds))
        for i in range(0, len(perm) - bs + 1, bs):
            if step >= steps:
                break
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            x, boxes = collate_detection([train_ds[int(j)] for j in perm[i : i + bs]])
            if opts.get("shift"):
                x, boxes = shift_batch(x, boxes, opts["shift"], rng)
            loss, parts = loss_fn(model(x), boxes)
            if step < opts.get("cls_first", 0):
                loss = loss_fn.lambda_cls * parts_cls(loss_fn, model, x, boxes)
            if gate_w:
                loss = loss + gate_w * gate_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                history.append(
                    {
                        "step": step,
                        "s": round(time.time() - start, 1),
                        **{k: round(v, 4) for k, v in parts.items()},
                    }
                )
                log(f"{model.spec.mode} {step}/{steps} {history[-1]}")
    info = {"history": history, "train_s": round(time.time() - start, 1), **pre}
    if pre.get("pretrain_s"):
        info["train_s"] = round(info["train_s"] + pre["pretrain_s"], 1)
    return model.eval(), (train_ds, test_ds), info


def weights_name(name: str, mode: str, steps: int, extra_overrides: list[str]) -> str:
    """File name of a run's weights; extra ``--set`` overrides add a hash of themselves."""
    import hashlib

    tag = hashlib.sha1(json.dumps(extra_overrides).encode()).hexdigest()[:8] if extra_overrides else ""
    return f"{name}-{mode}-{steps}{'-' + tag if tag else ''}.pt"


def run(name: str, steps: int, mode: str, seed: int, extra_overrides: list[str]) -> dict:
    overrides, opts = ABLATIONS[name]
    cfg = load_config(f"detect-moving-digits:{mode}", overrides + extra_overrides + [f"train.seed={seed}"])
    model, (train_ds, test_ds), info = train_detector_steps(
        cfg, steps, opts, seed, log=lambda m: print(name, m, flush=True)
    )
    history = info["history"]
    metrics = evaluate(model, load_split(cfg, "test"), cfg)
    row = {
        "name": name,
        "mode": mode,
        "seed": seed,
        "steps": steps,
        "train_s": info["train_s"],
        "init_train_s": info.get("init_train_s"),
        "overrides": overrides + extra_overrides,
        "opts": opts,
        "mAP50": metrics["mAP50"],
        "mAP50_95": metrics["mAP50_95"],
        "mAP50_agnostic": metrics["mAP50_agnostic"],
        "slot_class_acc": slot_class_accuracy(model, test_ds),
        "train_slot_class_acc": slot_class_accuracy(model, torch.utils.data.Subset(train_ds, range(500))),
        "last": history[-1] if history else {},
        "grid": list(model.grid),
        "train_samples": len(train_ds),
        "weights": weights_name(name, mode, steps, extra_overrides),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), OUT / row["weights"])
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def table() -> str:
    rows = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = [
        "| ablation | mode | steps | train s | mAP@0.5 | class-agnostic mAP@0.5 | mAP@[.5:.95] | slot class acc test / train |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['mode']} | {r['steps']} | {r['train_s']:.0f} | {r['mAP50']:.3f} | "
            f"{r['mAP50_agnostic']:.3f} | {r['mAP50_95']:.3f} | {r['slot_class_acc']:.3f} / {r['train_slot_class_acc']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--mode", default="fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra recipe override section.key=value")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if a.list:
        for k, (o, x) in ABLATIONS.items():
            print(k, o, x)
    if a.table:
        print(table())
    for n in a.names:
        run(n, a.steps, a.mode, a.seed, a.set)


if __name__ == "__main__":
    main()
