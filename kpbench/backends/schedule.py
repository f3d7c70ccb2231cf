"""The epsilon-scaling schedule of Sinkhorn: a specification shared by every implementation.

Both the torch-based Sinkhorn of :mod:`kpbench.losses` and the independent NumPy
reference follow the same schedule, so that their values can be compared at the
precision of the arithmetic rather than of the solver.
"""
from __future__ import annotations

import math

from .base import KPBenchError, check_blur, check_p


def epsilon_schedule(diameter: float, blur: float, p: int, scaling: float) -> list[float]:
    """eps values from diameter**p down to blur**p, shrinking the blur by ``scaling`` per step.

    A cloud of one point, or of identical points, has diameter 0: the schedule then
    starts (and ends) at blur**p instead of taking log(0).
    """
    blur = check_blur(blur)
    check_p(p)
    if not (0.0 < scaling < 1.0):
        raise KPBenchError(f"scaling must be in (0, 1), got {scaling!r}")
    radius = max(float(diameter), blur)
    steps = int(math.floor(math.log(blur / radius) / math.log(scaling))) if radius > blur else 0
    schedule = [(radius * scaling**k) ** p for k in range(steps + 1)]
    if schedule[-1] > blur**p * (1 + 1e-12):
        schedule.append(blur**p)
    else:
        schedule[-1] = blur**p
    return schedule


def fixed_schedule(blur: float, p: int, iters: int) -> list[float]:
    """``iters`` iterations at eps = blur**p, no annealing (kernel-speed timing)."""
    if int(iters) < 1:
        raise KPBenchError(f"iters must be >= 1, got {iters!r}")
    return [check_blur(blur) ** check_p(p)] * int(iters)


def damping(eps: float, reach: float | None, p: int) -> float:
    """Factor of the unbalanced (KL-penalised) Sinkhorn update; 1 when balanced."""
    if reach is None:
        return 1.0
    return 1.0 / (1.0 + eps / reach**p)
