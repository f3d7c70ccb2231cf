"""Distances to the target, computed apart from the flow (NumPy float64)."""
from __future__ import annotations

import numpy as np

from kpbench import losses

MAX_ASSIGNMENT = 2000     # linear_sum_assignment is O(N^3): beyond that, no exact W2 in 2D
MAX_ENERGY_PAIRS = 10**8  # the float64 energy distance costs O(NM)


def w2_1d(x, y) -> float:
    """Exact W2 between the uniform measures on the 1D samples x (N,) and y (M,).

    In 1D the optimal plan is monotone: W2^2 = int_0^1 |F^-1(u) - G^-1(u)|^2 du, and both
    quantile functions are step functions, constant between the breakpoints i/N and j/M.
    """
    x, y = np.sort(np.ravel(x)), np.sort(np.ravel(y))
    u = np.union1d(np.arange(len(x) + 1) / len(x), np.arange(len(y) + 1) / len(y))
    mid, width = (u[1:] + u[:-1]) / 2, np.diff(u)
    qx = x[np.minimum((mid * len(x)).astype(int), len(x) - 1)]
    qy = y[np.minimum((mid * len(y)).astype(int), len(y) - 1)]
    return float(np.sqrt(np.sum(width * (qx - qy) ** 2)))


def w2_matching(x, y) -> float | None:
    """Exact W2 between two uniform clouds of the same size (optimal assignment); None if
    the sizes differ or exceed MAX_ASSIGNMENT."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) > MAX_ASSIGNMENT:
        return None
    cost = cdist(x, y, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def energy_to_target(x, y, a=None, b=None) -> float | None:
    """Energy distance 1/2|alpha - beta|^2 (kernel -|x-y|) by the float64 NumPy reference
    (weights a, b; None: uniform); None beyond MAX_ENERGY_PAIRS."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) * len(y) > MAX_ENERGY_PAIRS:
        return None
    return float(losses.energy_distance(a, x, b, y, backend="numpy"))
