"""The docstring examples of spquant.data run and are right."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "events",
    "readers",
    "readers.atis",
    "readers.aedat2",
    "readers.aedat3",
    "readers.prophesee",
    "idx",
    "embedded",
    "transforms",
    "emulator",
    "emulated",
    "datasets",
    "fetch",
    "loader",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    mod = importlib.import_module(f"spquant.data.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"spquant.data.{name} has no examples"
