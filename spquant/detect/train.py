"""Training and evaluation of spiking YOLO detectors from TOML recipes.

A recipe (``spquant/configs/<name>.toml``, or any path) has the classifiers' layout — ``name``,
``description``, sections ``[model]``, ``[quant]`` (a :class:`~spquant.models.QuantSpec`),
``[data]``, ``[train]``, ``[variants.<v>]`` (dotted-key overrides, chosen with ``recipe:v``) — plus
``task = "detect"`` and the detection sections ``[loss]`` (:class:`~spquant.detect.YOLOLoss`
weights) and ``[eval]`` (decoding). See ``spquant/configs/detect-moving-digits.toml``.

Training: Adam (LIF thresholds in their own parameter group), cosine learning rate over all steps,
YOLOv2 loss (+ ``prune_loss_weight * gate_loss`` in spquant mode, docs/method.md#pruning), optional wall-clock
budget ``train.time_budget_s`` (stops early; the schedule still spans ``epochs``). The run folder
gets ``model.pt`` (weights + config + metrics) and ``metrics.json`` with VOC mAP@0.5, COCO
mAP@[.5:.95] and, when :mod:`spquant.cost` is available, the static (memory) and measured
(FLOPs reduction) cost.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from spquant.detect.loss import YOLOLoss
from spquant.detect.metrics import evaluate
from spquant.models.common import QuantSpec
from spquant.models.yolo import SpikingYOLO

__all__ = [
    "RECIPE_DIR", "load_recipe", "build_detector", "build_detection_data", "train_detector",
    "evaluate_detector", "load_run", "plot_detections", "detection_cost", "DEFAULTS",
]

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs"
FORMAT = "spquant-detect/1"

DEFAULTS: dict = {
    "name": "detect",
    "description": "",
    "task": "detect",
    "model": {"name": "yolo", "width": 1.0, "plan": None, "input": [64, 64], "in_channels": 2, "classes": 10,
              "T": 4, "anchors": None, "head_kernel": 1},
    "quant": {},
    "data": {"dataset": "moving-digits", "train_samples": 2000, "test_samples": 500, "root": None, "cache_dir": "default",
             "options": {}},
    "train": {"epochs": 5, "batch_size": 32, "lr": 2e-3, "threshold_lr": None, "weight_decay": 0.0,
              "schedule": "cosine", "time_budget_s": 0, "seed": 0, "threads": 0, "log_every": 20},
    "loss": {"lambda_coord": 5.0, "lambda_obj": 1.0, "lambda_noobj": 0.5, "lambda_cls": 1.0, "ignore_threshold": 0.6},
    "eval": {"conf_threshold": 0.05, "nms_iou": 0.45, "max_det": 100, "batch_size": 64, "cost_batches": 4},
}


class RecipeError(ValueError):
    pass


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise RecipeError(f"cannot set {key!r}: {p!r} is not a section")
    cur[parts[-1]] = value


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict, raw: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in raw.items():
        if k not in out:
            raise RecipeError(f"{where}: unknown key {k!r}; known: {sorted(out)}")
        if isinstance(out[k], dict) and k not in ("options", "quant"):
            if not isinstance(v, dict):
                raise RecipeError(f"{where}: {k!r} must be a table")
            out[k] = _merge(out[k], v, f"{where}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_recipe(spec: str | os.PathLike | dict, overrides: list[str] | None = None) -> dict:
    """A validated recipe dict from a name (``detect-moving-digits``), ``name:variant``, a path or a dict.

    ``overrides``: ``"section.key=value"`` strings (values parsed as TOML, else strings).

    >>> r = load_recipe("detect-moving-digits:quant", ["train.epochs=1"])
    >>> r["quant"]["mode"], r["train"]["epochs"], r["task"]
    ('quant', 1, 'detect')
    """
    variant = None
    if isinstance(spec, dict):
        raw, where = copy.deepcopy(spec), "<dict>"
    else:
        s = os.fspath(spec)
        path = Path(s)
        if not path.is_file() and ":" in s:
            s, variant = s.rsplit(":", 1)
            path = Path(s)
        if not path.is_file():
            path = RECIPE_DIR / f"{s}.toml"
        if not path.is_file():
            names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
            raise RecipeError(f"no recipe {s!r} (a TOML path or one of {names})")
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        where = str(path)
    variants = raw.pop("variants", {})
    if variant is not None:
        if variant not in variants:
            raise RecipeError(f"{where}: no variant {variant!r}; variants: {sorted(variants)}")
        for k, v in variants[variant].items():
            _set_dotted(raw, k, v)
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like section.key=value")
        k, v = item.split("=", 1)
        _set_dotted(raw, k.strip(), _parse_value(v.strip()))
    cfg = _merge(DEFAULTS, raw, where)
    if cfg["task"] != "detect":
        raise RecipeError(f"{where}: task must be 'detect', got {cfg['task']!r}")
    if cfg["model"]["name"] != "yolo":
        raise RecipeError(f"{where}: model.name must be 'yolo', got {cfg['model']['name']!r}")
    if cfg["data"]["dataset"] not in ("moving-digits", "gen1"):
        raise RecipeError(f"{where}: data.dataset must be 'moving-digits' or 'gen1'")
    QuantSpec.from_dict(cfg["quant"])  # validates
    cfg["variant"] = variant
    return cfg


def build_detector(cfg: dict) -> SpikingYOLO:
    m = cfg["model"]
    kwargs = {}
    if m["plan"] is not None:
        kwargs["plan"] = tuple(m["plan"])
    return SpikingYOLO(m["classes"], in_channels=m["in_channels"], input_size=tuple(m["input"]), width=m["width"],
                       anchors=m["anchors"], spec=QuantSpec.from_dict(cfg["quant"]), head_kernel=m["head_kernel"], **kwargs)


def build_detection_data(cfg: dict, split: str):
    """The data set of a recipe's split ('train' or 'test')."""
    d, m = cfg["data"], cfg["model"]
    if d["dataset"] == "moving-digits":
        from spquant.data.detection import MovingDigits

        n = d["train_samples"] if split == "train" else d["test_samples"]
        opts = dict(d["options"])
        cache = d["cache_dir"]
        return MovingDigits(cache_dir=cache, mnist_root=d["root"], num_samples=n, split=split, T=m["T"], **opts)
    from spquant.data.detection import Gen1DetectionFrames

    if not d["root"]:
        raise RecipeError("data.root must name the Gen1 folder (with train/, val/, test/)")
    ds = Gen1DetectionFrames(d["root"], split, T=m["T"], input_size=tuple(m["input"]), **d["options"])
    n = d["train_samples"] if split == "train" else d["test_samples"]
    if n and n < len(ds):
        idx = np.random.default_rng(cfg["train"]["seed"]).choice(len(ds), n, replace=False)
        ds = Subset(ds, sorted(idx.tolist()))
    return ds


def _collate(batch):
    from spquant.data.detection import collate_detection

    return collate_detection(batch)


def _loader(ds, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=_collate, generator=g)


@torch.no_grad()
def evaluate_detector(model: SpikingYOLO, ds, cfg: dict, max_samples: int | None = None) -> tuple[dict, list, list]:
    """(metrics, detections, ground truths) of ``model`` on ``ds``."""
    e = cfg["eval"]
    was = model.training
    model.eval()
    dets, gts, agn = [], [], []
    seen = 0
    for x, boxes in _loader(ds, e["batch_size"], False):
        out = model(x)
        for d in model.decode(out, e["conf_threshold"], e["nms_iou"], e["max_det"]):
            dets.append(d.numpy())
        for d in model.decode(out, e["conf_threshold"], e["nms_iou"], e["max_det"], agnostic=True):
            d = d.numpy().copy()
            d[:, 5] = 0
            agn.append(d)
        gts.extend(b.numpy() for b in boxes)
        seen += x.shape[1]
        if max_samples and seen >= max_samples:
            break
    model.train(was)
    metrics = evaluate(dets, gts, model.num_classes)
    # localisation only: every box one class, scored by objectness
    one = [np.concatenate([g[:, :4], np.zeros((len(g), 1))], 1) for g in gts]
    a = evaluate(agn, one, 1)
    metrics["mAP50_agnostic"], metrics["mAP50_95_agnostic"] = a["mAP50"], a["mAP50_95"]
    return metrics, dets, gts


def detection_cost(model: SpikingYOLO, ds, cfg: dict) -> dict:
    """Static (memory) and measured (FLOPs) cost via :mod:`spquant.cost`, or {} when it is missing."""
    try:
        from spquant.cost import measure_cost, static_cost
    except ImportError:
        return {}
    m = cfg["model"]
    out = {"static": static_cost(model, input_shape=(m["in_channels"], *m["input"])).to_dict()}
    loader = _loader(ds, cfg["eval"]["batch_size"], False)
    batches = ((x, torch.zeros(x.shape[1], dtype=torch.long)) for x, _ in loader)
    out["measured"] = measure_cost(model, batches, max_batches=cfg["eval"]["cost_batches"]).to_dict()
    return out


def _param_groups(model, t: dict):
    thr = [p for n, p in model.named_parameters() if n.endswith("threshold")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("threshold")]
    groups = [{"params": rest, "weight_decay": t["weight_decay"]}]
    if thr:
        groups.append({"params": thr, "weight_decay": 0.0, "lr": t["threshold_lr"] or t["lr"]})
    return groups


def train_detector(cfg: dict, out_dir: str | os.PathLike | None = None, log=print) -> dict:
    """Train a detector as the recipe says; returns the final metrics (also written to ``out_dir``)."""
    t = cfg["train"]
    if t["threads"]:
        torch.set_num_threads(int(t["threads"]))
    torch.manual_seed(t["seed"])
    train_ds = build_detection_data(cfg, "train")
    test_ds = build_detection_data(cfg, "test")
    model = build_detector(cfg)
    spec = model.spec
    loss_fn = YOLOLoss(model.anchors, model.num_classes, model.stride, **cfg["loss"])
    opt = torch.optim.Adam(_param_groups(model, t), lr=t["lr"])
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    gate_w = 0.0
    if spec.pruned:
        from spquant.prune import gate_loss, prune_loss_weight

        gate_w = prune_loss_weight(spec)
    steps_per_epoch = math.ceil(len(train_ds) / t["batch_size"])
    total = max(1, t["epochs"] * steps_per_epoch)
    start = time.time()
    step, stopped = 0, False
    history = []
    model.train()
    for epoch in range(t["epochs"]):
        loader = _loader(train_ds, t["batch_size"], True, seed=t["seed"] * 1000 + epoch)
        for x, boxes in loader:
            f = 0.5 * (1 + math.cos(math.pi * step / total)) if t["schedule"] == "cosine" else 1.0
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * f
            out = model(x)
            loss, parts = loss_fn(out, boxes)
            if gate_w:
                gl = gate_loss(model)
                loss = loss + gate_w * gl
                parts["gate"] = float(gl.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % t["log_every"] == 0 or step == 1:
                elapsed = time.time() - start
                log(f"epoch {epoch} step {step}/{total} loss {float(loss.detach()):.3f} "
                    + " ".join(f"{k} {v:.3f}" for k, v in parts.items()) + f" ({elapsed:.0f} s)")
                history.append({"step": step, "loss": float(loss.detach()), **parts})
            if t["time_budget_s"] and time.time() - start > t["time_budget_s"]:
                stopped = True
                break
        if stopped:
            log(f"time budget of {t['time_budget_s']} s reached after {step} steps")
            break
    train_s = time.time() - start
    metrics, _, _ = evaluate_detector(model, test_ds, cfg)
    metrics = {"mAP50": metrics["mAP50"], "mAP50_95": metrics["mAP50_95"], "AP50_coco": metrics["AP50_coco"],
               "mAP50_agnostic": metrics["mAP50_agnostic"], "mAP50_95_agnostic": metrics["mAP50_95_agnostic"],
               "AP_per_class": metrics["AP_per_class"], "n_det": metrics["n_det"], "steps": step, "train_s": round(train_s, 1),
               "epochs_done": step / steps_per_epoch, "mode": spec.mode}
    cost = detection_cost(model, test_ds, cfg)
    if cost:
        metrics["cost"] = cost
    log(f"test mAP@0.5 {metrics['mAP50']:.4f}  mAP@[.5:.95] {metrics['mAP50_95']:.4f}  ({step} steps, {train_s:.0f} s)")
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "config": cfg, "state_dict": model.state_dict(), "metrics": metrics,
                    "history": history}, out / "model.pt")
        (out / "metrics.json").write_text(json.dumps({"config": cfg, "metrics": metrics}, indent=2, default=str))
    return metrics


def load_run(path) -> tuple[SpikingYOLO, dict, dict]:
    """(model, config, metrics) from a run folder or its ``model.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    blob = torch.load(p, map_location="cpu", weights_only=False)
    if blob.get("format") != FORMAT:
        raise RecipeError(f"{p}: not a detection run (format {blob.get('format')!r})")
    model = build_detector(blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob["config"], blob.get("metrics", {})


def plot_detections(model: SpikingYOLO, ds, indices, path, conf_threshold: float = 0.3, class_names=None) -> None:
    """Save a figure of event frames (sum over T; ON red, OFF green) with true boxes (white, dashed)
    and predictions (cyan, with class and score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model.eval()
    n = len(indices)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        frames, boxes = ds[i]
        with torch.no_grad():
            det = model.decode(model(frames[:, None]), conf_threshold=conf_threshold)[0]
        acc = frames.sum(0).numpy()  # [2, H, W]
        img = np.zeros((*acc.shape[1:], 3))
        scale = max(float(acc.max()), 1.0)
        img[..., 0] = np.clip(acc[1] / scale * 3, 0, 1)
        img[..., 1] = np.clip(acc[0] / scale * 3, 0, 1)
        ax.imshow(img, interpolation="nearest")
        name = (lambda c: class_names[int(c)]) if class_names else (lambda c: str(int(c)))
        for b in boxes.tolist():
            ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec="white", ls="--", lw=1.2))
            ax.text(b[0] - 0.5, b[3] + 0.3, name(b[4]), color="white", fontsize=7, va="top")
        for d in det.tolist():
            ax.add_patch(Rectangle((d[0] - 0.5, d[1] - 0.5), d[2] - d[0], d[3] - d[1], fill=False, ec="cyan", lw=1.4))
            ax.text(d[0] - 0.5, d[1] - 0.7, f"{name(d[5])} {d[4]:.2f}", color="cyan", fontsize=7)
        ax.set_title(f"sample {i}", fontsize=8)
    fig.suptitle(f"true boxes (white, dashed: class) vs predictions (cyan: class score, score >= {conf_threshold})", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_rows(run_dirs) -> list[dict]:
    """One row per detection run: mode, bits, memory (MB = 10^6 bytes), FLOPs reduction, mAP; memory
    reduction and mAP drop relative to the FP32 run among them (same recipe name)."""
    runs = []
    for r in run_dirs:
        p = Path(r)
        blob = json.loads((p / "metrics.json").read_text())
        runs.append((p, blob["config"], blob["metrics"]))
    base = {c["name"]: m for _, c, m in runs if m.get("mode") == "fp32"}
    rows = []
    for p, c, m in runs:
        st = m.get("cost", {}).get("static", {})
        me = m.get("cost", {}).get("measured", {})
        q = QuantSpec.from_dict(c["quant"])
        b = base.get(c["name"])
        rows.append({
            "run": p.name, "mode": q.mode,
            "weight_bits": "32" if not q.quantized else f"{q.weight_bits} (first {q.first_bits}, head {q.last_bits})",
            "membrane_bits": st.get("membrane_bits"), "params": st.get("params"), "lif_neurons": st.get("lif_neurons"),
            "total_mb": st.get("total_mb"), "total_mb_fp32": st.get("total_mb_fp32"),
            "memory_x": (b["cost"]["static"]["total_mb"] / st["total_mb"]) if b and st and b.get("cost") else None,
            "flops_reduction": me.get("flops_reduction"), "mAP50": m["mAP50"], "mAP50_95": m["mAP50_95"],
            "drop": (b["mAP50"] - m["mAP50"]) if b else None, "steps": m.get("steps"), "train_s": m.get("train_s"),
        })
    return rows


def markdown_report(rows: list[dict]) -> str:
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    lines = ["| run | mode | weight bits | membrane bits | memory MB | memory reduction | FLOPs reduction | mAP@0.5 | mAP@[.5:.95] | mAP@0.5 drop vs FP32 | steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['mode']} | {r['weight_bits']} | {f(r['membrane_bits'], 'g')} | {f(r['total_mb'], '.4f')} | "
                     f"{f(r['memory_x'], '.2f')}x | {f(r['flops_reduction'], '.2f')}x | {f(r['mAP50'], '.4f')} | {f(r['mAP50_95'], '.4f')} | "
                     f"{f(r['drop'], '+.4f')} | {r['steps']} |")
    return "\n".join(lines)
