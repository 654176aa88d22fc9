"""Start a quantized run from a trained FP32 run (``spquant train --init-from RUN``) and load the
FP32 teacher used for distillation.

Quantization-aware fine-tuning from a trained model is what most users do: train (or download) the
FP32 SNN once, then quantize it. :func:`init_from_run` turns a freshly built Quant-SNN or
SpQuant-SNN into that starting point:

1. **exact load**: every tensor of the FP32 run's ``model.safetensors`` is copied unchanged into
   the tensor of the same name (conv / linear weights, BN parameters and statistics); the new
   model may only *add* tensors (learned quantizer steps, gate predictors), never lack one;
2. **thresholds**: the FP32 run's V_th (per layer, or broadcast to per channel) — the integer
   membrane grid is in units of the initial threshold, so the FP32 network's operating point is
   kept;
3. **learned quantizer steps** start from the fixed quantizer's statistic of the loaded weights
   (TWN scale for ternary, SAWB ``alpha / n`` for b bits, mean|W| for binary);
4. **gates opened** (SpQuant-SNN): every gate predictor's bias is raised to ``open_bias`` so all
   channels pass at the start; the gate loss then trains them to their target;
5. **BN recalibration**: running mean and variance are re-estimated (cumulative average, no
   momentum) over ``calib_batches`` training batches with the quantized weights and membrane,
   because quantization changes the statistics of every current.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spquant.train import checkpoint as ckpt

__all__ = ["init_from_run", "load_teacher", "InitFromError", "MODEL_KEYS_THAT_MUST_MATCH"]

MODEL_KEYS_THAT_MUST_MATCH = ("name", "width", "plan", "input", "in_channels", "classes")


class InitFromError(ckpt.CheckpointError):
    """The run to start from (or the teacher) does not fit the model being trained."""


def _read_run(run_dir):
    """The finished run in ``run_dir`` through the one :func:`~spquant.train.run.load_run`."""
    from spquant.train.run import load_run

    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").is_file():
        raise InitFromError(f"{run_dir}: no model.safetensors (is it a finished spquant run folder?)")
    return load_run(run_dir)


def _check_same_network(config, saved: dict, where: str) -> None:
    mine = config.to_dict()["model"]
    theirs = saved.get("model", {})
    diff = [k for k in MODEL_KEYS_THAT_MUST_MATCH if _norm(mine.get(k)) != _norm(theirs.get(k))]
    if diff:
        detail = ", ".join(f"model.{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff)
        raise InitFromError(f"{where}: a different network ({detail})")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _open_gates(model: nn.Module, open_bias: float) -> int:
    from spquant.prune import gate_modules

    n = 0
    with torch.no_grad():
        for gate in gate_modules(model):
            if getattr(gate, "predictor", None) is not None:
                gate.predictor.bias.clamp_(min=open_bias)
                n += 1
    return n


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> int:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``batches``
    (iterable of inputs [T, B, ...]). Returns the number of batches used (0: statistics kept)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    was_training = model.training
    n = 0
    try:
        for x in batches:
            if n == 0:
                model.train()
                for m in bns:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative moving average = exact mean over the batches
            model(x)
            n += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was_training)
    return n


def init_from_run(model: nn.Module, config, run_dir, calib_batches=(), open_bias: float = 3.0) -> dict:
    """Initialise ``model`` (built from ``config``) from the FP32 run in ``run_dir``; see the module
    docstring. ``calib_batches``: iterable of training inputs for the BN recalibration (none: the
    FP32 statistics are kept). Returns a summary (tensors copied, added, gates opened, batches)."""
    from spquant.quant import _ScaledQuantizer

    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    _check_same_network(config, run.config.to_dict(), str(run_dir))
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    state = model.state_dict()
    copied, broadcast = [], []
    with torch.no_grad():
        for key, value in tensors.items():
            if not key.startswith("model."):
                continue
            name = key[len("model.") :]
            if name not in state:
                raise InitFromError(
                    f"{run_dir}: tensor {name!r} has no counterpart in the {config.quant.mode} model"
                )
            dst = state[name]
            if dst.shape == value.shape:
                dst.copy_(value)
                copied.append(name)
            elif name.endswith("threshold") and value.dim() == 0:
                dst.copy_(value.expand_as(dst))  # per-layer V_th -> per-channel V_th
                broadcast.append(name)
            else:
                raise InitFromError(
                    f"{run_dir}: tensor {name!r} has shape {tuple(value.shape)} there, {tuple(dst.shape)} here"
                )
    loaded = {key[len("model.") :] for key in tensors if key.startswith("model.")}
    added = sorted(set(state) - loaded)
    steps = 0
    for module in model.modules():
        for child in module.children():
            if isinstance(child, _ScaledQuantizer) and hasattr(module, "weight"):
                child.init_from_weight(module.weight)
                steps += 1
    gates = _open_gates(model, open_bias) if config.quant.pruned else 0
    n_calib = recalibrate_bn(model, calib_batches)
    return {
        "from": str(run_dir),
        "copied": len(copied),
        "thresholds_broadcast": len(broadcast),
        "added": added,
        "learned_steps_initialised": steps,
        "gates_opened": gates,
        "bn_calibration_batches": n_calib,
    }


def load_teacher(run_dir, config, device="cpu") -> nn.Module:
    """The frozen FP32 (or any) teacher network of a run folder, in eval mode, for distillation."""
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    t_cfg = run.config
    if t_cfg.model.classes != config.model.classes:
        raise InitFromError(
            f"{run_dir}: teacher has {t_cfg.model.classes} classes, the student {config.model.classes}"
        )
    if (
        tuple(t_cfg.model.input) != tuple(config.model.input)
        or t_cfg.model.in_channels != config.model.in_channels
    ):
        raise InitFromError(
            f"{run_dir}: teacher input {t_cfg.model.in_channels}x{list(t_cfg.model.input)} differs from the student's"
        )
    teacher = run.model
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
