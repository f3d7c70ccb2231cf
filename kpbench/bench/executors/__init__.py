"""Executors: run sweep points, hand each row back as it finishes (see :mod:`.base`)."""
from __future__ import annotations

import importlib

from kpbench.errors import KPBenchError
from kpbench.bench.checks import EXECUTORS

ALL = EXECUTORS + ("interleaved",)


def get(name: str):
    """The executor module ``name`` (its ``run(points, kind, settings, on_row, on_final)``)."""
    if name not in ALL:
        raise KPBenchError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return importlib.import_module(f"kpbench.bench.executors.{name}")
