"""What an op's timed call returns is reduced to (:class:`Summary`), and the pair of the
timed call and that reduction (:class:`Prepared`) that :func:`kpbench.bench.ops.prepare`
gives the measures."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Summary:
    """What a call's output is reduced to: a scalar, maybe a vector, maybe iterations,
    and for Sinkhorn how well it solved (``marginal_err``, ``converged``) where known."""

    value: float
    vector: np.ndarray | None = None
    iterations: int | None = None
    marginal_err: float | None = None
    converged: bool | None = None


def to_numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def vector_summary(out, iterations=None) -> Summary:
    v = to_numpy(out).ravel()
    return Summary(float(np.linalg.norm(v)), v, iterations)


@dataclass
class Prepared:
    """``call()`` is what is timed; ``summarize(call())`` reduces its output."""

    call: Callable[[], object]
    summarize: Callable[[object], Summary]
