"""What every Sinkhorn implementation takes and returns: the solver of :mod:`kpbench.sinkhorn`,
the float64 reference and the peers alike (``own_losses["sinkhorn"](bk, a, x, b, y, options)``).

:class:`SinkhornOptions` is checked once, when it is made; :class:`SinkhornResult` is the
value (or the potentials) with how the solve went.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from kpbench.errors import KPBenchError

from .base import check_blur, check_flag, check_number, check_p, check_whole

SCHEDULES = ("kpbench", "geomloss")
MAX_ITER = 1000   # default cap on iterations of the tol phase


def check_solver_options(*, iters, tol, max_iter) -> tuple:
    """(iters, tol, max_iter) checked before any work is done: whole numbers >= 1 and a
    finite tol >= 0, or None; strings, bools, NaN and 2.7 iterations are refused."""
    iters = None if iters is None else check_whole(iters, "iters")
    max_iter = None if max_iter is None else check_whole(max_iter, "max_iter")
    if tol is not None:
        tol = check_number(tol, "tol")
        if not (math.isfinite(tol) and tol >= 0):
            raise KPBenchError(f"tol must be a finite number >= 0, got {tol!r}")
    return iters, tol, max_iter


@dataclass(frozen=True)
class SinkhornOptions:
    """The options of :func:`kpbench.losses.sinkhorn` (see there), checked and normalised
    once: p -> int, numbers -> float, bad values -> KPBenchError."""

    p: int = 2
    blur: float = 0.05
    scaling: float = 0.5
    reach: float | None = None
    debias: bool = True
    potentials: bool = False
    iters: int | None = None
    tol: float | None = None
    max_iter: int | None = None
    schedule: str = "kpbench"

    def __post_init__(self):
        checked = dict(p=check_p(self.p), blur=check_blur(self.blur),
                       reach=None if self.reach is None else check_blur(self.reach, "reach"))
        checked.update(zip(("iters", "tol", "max_iter"), check_solver_options(
            iters=self.iters, tol=self.tol, max_iter=self.max_iter)))
        checked.update(scaling=check_number(self.scaling, "scaling"),
                       debias=check_flag(self.debias, "debias"),
                       potentials=check_flag(self.potentials, "potentials"))
        if self.schedule not in SCHEDULES:
            raise KPBenchError(f"unknown schedule {self.schedule!r}; choose one of "
                               f"{', '.join(SCHEDULES)}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def eps(self) -> float:
        return self.blur**self.p


@dataclass
class SinkhornResult:
    """One solve: ``value`` (None where only the potentials were asked), ``potentials``
    (f, g) (debiased: f_ba - f_aa, g_ab - g_bb; None unless asked), ``iterations`` and
    ``eps_schedule``, ``marginal_err`` (|pi 1 - a|_1 + |pi^T 1 - b|_1 of the cross
    potentials; unbalanced: the optimality residual) and ``converged`` (None without a
    tolerance; else whether the solve stopped by it rather than by ``max_iter``); None
    wherever an implementation does not say (POT's debiased solve: no iteration count)."""

    value: object = None
    potentials: tuple | None = None
    iterations: int | None = None
    eps_schedule: list = field(default_factory=list)
    marginal_err: float | None = None
    converged: bool | None = None
    primal: float | None = None   # the primal objective, where computed (the float64 reference)

    def output(self, options: SinkhornOptions):
        """What :func:`kpbench.losses.sinkhorn` returns: the potentials if asked, else the value."""
        return self.potentials if options.potentials else self.value
