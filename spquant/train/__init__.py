"""Training: validated TOML recipes, the TET loss, the loop (checkpoints, exact resume, DDP) and
the ``spquant train / eval / report / demo`` commands. See docs/training.md."""

from spquant.train.config import Config, ConfigError, list_recipes, load_config
from spquant.train.loop import TrainResult, evaluate, load_run, train
from spquant.train.loss import tet_loss

__all__ = ["Config", "ConfigError", "TrainResult", "evaluate", "list_recipes", "load_run", "load_config", "tet_loss", "train"]
