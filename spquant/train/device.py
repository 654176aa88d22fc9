"""``run.device``: where a run's model and data go."""

from __future__ import annotations

import torch

from spquant.train.config import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "run.device = cuda (--device cuda) was asked for but CUDA is not available here"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
