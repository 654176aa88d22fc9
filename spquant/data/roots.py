"""Where a dataset lives on disk: ``data.root`` of the recipe, else ``$SPQUANT_DATA/<dataset>``.

spquant never guesses a location: with neither set, :func:`data_root` raises :class:`DataRootError`
naming both ways to set one. A relative ``data.root`` is taken relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataRootError", "ENV", "data_root", "folder_name"]

ENV = "SPQUANT_DATA"

# datasets read from another dataset's files: the event emulator and the moving-digits generator
# turn MNIST images into events, so their root is MNIST's
_FOLDER = {"mnist-dvs": "mnist", "moving-digits": "mnist"}


class DataRootError(FileNotFoundError):
    """No data root: neither ``data.root`` nor ``$SPQUANT_DATA`` is set."""


def folder_name(dataset: str) -> str:
    """The folder of ``dataset`` under ``$SPQUANT_DATA`` (``mnist-dvs`` reads ``mnist``)."""
    return _FOLDER.get(dataset, dataset)


def data_root(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``dataset``: ``root`` when given, else ``$SPQUANT_DATA/<dataset>``.

    >>> str(data_root("cifar10", "/data/cifar10"))
    '/data/cifar10'
    """
    if root:
        return Path(os.path.expanduser(os.fspath(root)))
    env = os.environ.get(ENV)
    if env:
        return Path(os.path.expanduser(env)) / folder_name(dataset)
    raise DataRootError(
        f"no data root for dataset {dataset!r}: set data.root in the recipe (or --set data.root=PATH), "
        f"or the environment variable {ENV} (then ${ENV}/{folder_name(dataset)} is used)"
    )
