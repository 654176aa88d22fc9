"""The run folder, the one format every task writes, and :func:`load_run`, the one way to read it.

A run folder (``spquant train --out RUN``)::

    config.json                      the resolved config (written once data and model have loaded)
    metrics.jsonl                    one JSON record per log step / evaluation / the end
    checkpoints/step-N.safetensors   model + optimizer + RNG state, and
    checkpoints/step-N.json          its sidecar (config, step, metrics, SHA-256 of the tensors)
    model.safetensors + model.json   final weights and their sidecar (config, metrics)
    run.json                         config, metrics and versions of the finished run

Classification and detection runs differ only in their config (``task``) and metrics
(``test_accuracy`` or ``mAP50`` / ``mAP50_95``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from spquant.train import checkpoint as ckpt
from spquant.train.config import Config, config_from_dict
from spquant.train.device import resolve_device

__all__ = ["Run", "RunExistsError", "load_run", "RUN_FILES", "is_run_dir", "prepare_run_dir"]

# what a run writes; --overwrite removes exactly these, nothing else in the folder
RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "checkpoints",
    "model.safetensors",
    "model.json",
    "run.json",
    "tensorboard",
)


class RunExistsError(FileExistsError):
    """``--out`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


@dataclass
class Run:
    """A trained (or checkpointed) run: its folder, config, model (eval mode), metrics, and the
    checkpoint step it came from (None: the final ``model.safetensors``)."""

    dir: Path
    config: Config
    model: nn.Module
    metrics: dict = field(default_factory=dict)
    step: int | None = None

    @property
    def task(self) -> str:
        return self.config.task

    def __getitem__(self, key: str):  # run["model"], as callers written against the old dict use it
        return getattr(self, key)


def is_run_dir(path) -> bool:
    """Whether ``path`` holds any file a run writes."""
    p = Path(path)
    return p.is_dir() and any((p / f).exists() for f in RUN_FILES)


def prepare_run_dir(path, resume: bool = False, overwrite: bool = False) -> None:
    """Check ``--out`` before anything is trained: refuse an existing run unless ``resume``
    (continue it) or ``overwrite`` (delete the run's own files first). Creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunExistsError(f"--out {p} is a file, not a run folder")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if not is_run_dir(p) or resume:
        return
    if not overwrite:
        raise RunExistsError(
            f"{p} already holds a run; use --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    for name in RUN_FILES:
        f = p / name
        if f.is_dir():
            shutil.rmtree(f)
        elif f.exists():
            f.unlink()


def load_run(run_dir, checkpoint: bool = False, device: str = "cpu") -> Run:
    """The run in ``run_dir``: the final ``model.safetensors`` (or, with ``checkpoint=True``, the
    newest valid checkpoint), its config, metrics and model on ``device`` in eval mode.

    Used by ``spquant eval | cost | export | report`` and the Python API. Raises
    :class:`~spquant.train.checkpoint.CheckpointError` for a folder that is no (finished) run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(f"{run_dir} is not a run folder (it does not exist)")
    step = None
    if checkpoint:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None:
            raise ckpt.CheckpointError(f"no valid checkpoint in {run_dir / 'checkpoints'}")
        tensors, meta = ckpt.load_checkpoint(latest)
        step = int(meta.get("step", 0))
    else:
        if not (run_dir / "model.json").is_file():
            raise ckpt.CheckpointError(
                f"{run_dir} is not a finished spquant run (no model.json); train it first, "
                "--resume it, or use --checkpoint for its newest checkpoint"
            )
        tensors, meta = ckpt.load_model_file(run_dir / "model.safetensors")
    if not isinstance(meta.get("config"), dict):
        raise ckpt.CheckpointError(f"{run_dir}: the sidecar holds no config")
    config = config_from_dict(meta["config"], str(run_dir))
    stored = sum(v.numel() for k, v in tensors.items() if k.startswith("model."))
    needed = config.count_values()
    if needed is not None and needed != stored:  # checked before allocating what the config asks for
        raise ckpt.CheckpointError(
            f"{run_dir}: the config describes a model of {needed} values, the tensor file holds {stored}"
        )
    model = config.build_model()
    ckpt.restore_model(model, tensors, str(run_dir))
    model.to(resolve_device(device)).eval()
    return Run(run_dir, config, model, dict(meta.get("metrics") or {}), step)
