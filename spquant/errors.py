"""The project's error classes, in one place (every layer may import this module).

Every loader turns bad input into one of these, naming the file and the fault; the ``spquant``
command prints such an error as one line on stderr and exits with status 2. Anything else that
escapes a loader is a bug.

>>> raise EventFileError("a.dat", "truncated")
Traceback (most recent call last):
...
spquant.errors.EventFileError: a.dat: truncated
>>> issubclass(ModelFileError, SpquantError) and issubclass(ModelFileError, ValueError)
True
"""

from __future__ import annotations

import os

__all__ = [
    "SpquantError",
    "EventFileError",
    "ModelFileError",
    "ConfigError",
    "CheckpointError",
    "RecipeError",
    "FetchError",
    "DeployError",
    "PackingError",
]


class SpquantError(Exception):
    """Base of every error the project raises for bad input (files, recipes, run folders)."""


class _FileFault(SpquantError):
    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")

    def __reduce__(self):  # picklable across worker processes (DataLoader)
        return (type(self), (self.path, self.problem))


class EventFileError(_FileFault, ValueError):
    """A data file (events, boxes, IDX, CIFAR batch, labels) that cannot be read: names file and fault."""


class ModelFileError(_FileFault, ValueError):
    """A .spq file that is missing, truncated, corrupt, of another version, or inconsistent."""


class ConfigError(SpquantError, ValueError):
    """A recipe that cannot be used: unknown key, wrong type, bad value or missing file."""


class CheckpointError(SpquantError, RuntimeError):
    """A checkpoint or run folder that is missing, torn, modified or does not fit the model/config."""


class RecipeError(ConfigError):
    """A detection recipe or option that cannot be used."""


class FetchError(SpquantError, RuntimeError):
    """A data set that could not be downloaded or verified."""


class DeployError(SpquantError, ValueError):
    """A model that cannot be folded or a program that fails its consistency checks."""


class PackingError(SpquantError, ValueError):
    """Weight codes that cannot be packed or unpacked."""
