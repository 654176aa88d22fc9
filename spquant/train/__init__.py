"""Training, one pipeline for every task: validated TOML recipes, the tasks (classification,
detection), the loop (checkpoints, exact resume, DDP), the run folder and its one reader
:func:`load_run`, and the ``spquant train / eval / report / demo`` commands. See docs/training.md."""

from spquant.train.config import Config, ConfigError, list_recipes, load_config
from spquant.train.loop import TrainResult, evaluate, train
from spquant.train.loss import tet_loss
from spquant.train.run import Run, RunExistsError, load_run

__all__ = [
    "Config",
    "ConfigError",
    "Run",
    "RunExistsError",
    "TrainResult",
    "evaluate",
    "list_recipes",
    "load_run",
    "load_config",
    "tet_loss",
    "train",
]
