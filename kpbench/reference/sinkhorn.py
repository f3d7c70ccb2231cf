"""Entropic OT and the Sinkhorn divergence in float64, written from the mathematics.

This is the judge of every Sinkhorn computation in kpbench, so it shares nothing with
the solver of :mod:`kpbench.sinkhorn`: no symmetric averaged updates, no
extrapolation step, no shared schedule. For uniform or weighted clouds (a, x), (b, y),
cost C_ij = |x_i - y_j|^p / p and eps > 0 it solves

    OT_eps(a, b) = min_pi <pi, C> + eps KL(pi | a x b) [+ rho KL(pi 1 | a) + rho KL(pi^T 1 | b)]

(the bracket for unbalanced OT, rho = reach^p; KL(u | v) = sum u log(u / v) - u + v)
by alternating Sinkhorn iterations on the full cost matrix, in the log domain
(the symmetric problems OT_eps(a, a) by the averaged fixed-point iteration of their
single potential, see :func:`solve_symmetric_ot`):

    f_i = -lam eps log sum_j b_j exp((g_j - C_ij) / eps),   g likewise,  lam = rho / (rho + eps)

(lam = 1 when balanced), over-relaxed (same fixed point, fewer iterations), and stops when
both hold: the optimality residual -- the row-marginal error |pi 1 - a|_1 (balanced) or
|pi 1 - a exp(-f / rho)|_1 (unbalanced), the column condition holding exactly after each
g update -- is at most ``tol`` times the mass, and the primal-dual gap is at most
:data:`GAP_TOLERANCE` times |primal| + |dual| + eps m_a m_b (a scale that never rounds to
0). The residual is summed from the log-ratios of the marginals to their targets
(sum_i target_i |e^{r_i} - 1|): two huge marginals that round to the same number cannot
make it read 0, and a NaN or an infinity anywhere reads "not converged".
An annealed warm start (eps halved from the largest cost down to eps, a few
iterations each, at most :data:`MAX_ANNEALING_LEVELS` levels and
:data:`WARM_START_SECONDS` seconds) only shortens the path: the stopping rule at the final
eps defines the result, within :data:`MAX_ITER` iterations and :data:`MAX_SECONDS`
seconds (else ``converged`` is False). Its value is reported twice, from the plan
(primal) and from the potentials (dual); at convergence they agree, and their gap says
how well.

Refused (:class:`~kpbench.errors.KPBenchError`) before any work: coordinates whose
largest cost (diameter^p / p, the diameter that of both clouds' bounding box) overflows
float64, eps or rho = reach^p that is 0 or overflows, and eps / largest cost below
float64's resolution (2.2e-16): the entropy is then below the cost's rounding and no
iteration can reach a residual (coordinates x1e8 at blur .05: the dual read 3e14 beside
a primal of 2e30, "converged"); nor above 1/sqrt(resolution) (6.7e7): the costs then
vanish in the rounding of the potentials (~eps x resolution; blur 1e8 on the unit square
read 2.2 where the value is 0.048, "converged").

The Sinkhorn divergence is S_eps = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2
+ eps (m_a - m_b)^2 / 2 (the last term is 0 when balanced; with it S is Sejourne et
al.'s unbalanced divergence, S(a, a) = 0).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.special import xlogy

from kpbench.errors import KPBenchError, MemoryBudgetExceeded

from .primitives import as_float64, cost_gradient, cost_matrix, log_weights

TOLERANCE = 1e-12          # optimality residual / mass at which a solve stops
GAP_TOLERANCE = 1e-9       # |primal - dual| / (|primal| + |dual| + eps m_a m_b) at which it may
MAX_ITER = 100_000
MAX_SECONDS = 600.0        # wall clock of the iterations at the final eps (then not converged)
WARM_START_ITERS = 30      # iterations per annealing stage of the warm start
MAX_ANNEALING_LEVELS = 64  # eps halvings of the warm start (the refusal below bounds them to 52)
WARM_START_SECONDS = 60.0  # wall clock of the warm start (then on to the final eps)
OVER_RELAXATION = 1.5      # w of the over-relaxed updates (1 = plain Sinkhorn)
CHECK_EVERY = 10           # iterations between two residual checks
MAX_MATRIX_BYTES = 2 * 2**30   # the (N, M) cost and plan are stored: refuse beyond this


@dataclass
class Solution:
    """The potentials of one OT_eps problem and how well they solve it."""

    f: np.ndarray
    g: np.ndarray
    primal: float
    dual: float
    residual: float        # the optimality residual, absolute (see the module docstring)
    iterations: int
    converged: bool
    plan: np.ndarray       # pi_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)


def solve_ot(a, C, b, eps: float, rho: float | None = None, *, tol: float = TOLERANCE,
             max_iter: int = MAX_ITER, iters: int | None = None, warm_start: bool = True
             ) -> Solution:
    """OT_eps between weights a (N,) and b (M,) for the cost matrix C (N, M).

    ``iters``: exactly that many iterations at eps from zero potentials (no warm start,
    no stopping rule), for timing the kernel; otherwise iterate until the stopping rule
    of the module docstring holds, or ``max_iter`` iterations, or :data:`MAX_SECONDS`.
    """
    log_a, log_b = log_weights(a), log_weights(b)
    f = np.zeros_like(a)
    if iters is None and warm_start:
        f = _warm_start(a, log_a, b, log_b, C, eps, rho, f)
    budget = int(iters) if iters is not None else int(max_iter)
    stop = None if iters is not None else tol * float(a.sum())
    f, g, (residual, done) = _iterate(a, log_a, b, log_b, C, eps, rho, f, budget, stop,
                                      time.monotonic() + MAX_SECONDS)
    return _solution(a, b, C, f, g, eps, rho, residual, done, tol)


def solve_symmetric_ot(a, C, eps: float, rho: float | None = None, *, tol: float = TOLERANCE,
                       max_iter: int = MAX_ITER, iters: int | None = None) -> Solution:
    """OT_eps(a, a) for a symmetric cost C: its optimal potentials are equal (f = g), the
    fixed point of f = T(f); the averaged iteration f <- (f + T(f)) / 2 reaches it in a
    few dozen steps where alternating updates need thousands (C_ii = 0 pins the plan
    near the diagonal). Same stopping rule, bounds and objectives as :func:`solve_ot`."""
    log_a = log_weights(a)
    lam = 1.0 if rho is None else rho / (rho + eps)
    f = np.zeros_like(a)
    budget = int(iters) if iters is not None else int(max_iter)
    stop = None if iters is not None else tol * float(a.sum())
    deadline = time.monotonic() + MAX_SECONDS
    done = 0
    while True:
        lse = _lse(log_a[None, :] + (f[None, :] - C) / eps, axis=1)
        done += 1
        residual = _residual(a, f, lse, eps, rho)
        if (done >= budget or time.monotonic() > deadline
                or _stops(a, a, C, f, f, eps, rho, residual, stop)):
            break
        f = 0.5 * (f - lam * eps * lse)
    return _solution(a, a, C, f, f, eps, rho, residual, done, tol)


def _solution(a, b, C, f, g, eps, rho, residual, done, tol) -> Solution:
    primal, dual, plan = _objectives(a, b, C, f, g, eps, rho)
    converged = (residual <= tol * float(a.sum())
                 and _gap_closed(primal, dual, eps * float(a.sum() * b.sum())))
    return Solution(f, g, primal, dual, residual, done, converged, plan)


def _stops(a, b, C, f, g, eps, rho, residual, stop) -> bool:
    """The stopping rule (``stop`` None: never): residual <= stop, then the gap closed."""
    if stop is None or not residual <= stop:
        return False
    primal, dual, _plan = _objectives(a, b, C, f, g, eps, rho)
    return _gap_closed(primal, dual, eps * float(a.sum() * b.sum()))


def _gap_closed(primal: float, dual: float, entropic_scale: float) -> bool:
    """|primal - dual| <= GAP_TOLERANCE (|primal| + |dual| + eps m_a m_b); False for an
    infinite or NaN value."""
    if not (math.isfinite(primal) and math.isfinite(dual)):
        return False
    return abs(primal - dual) <= GAP_TOLERANCE * (abs(primal) + abs(dual) + entropic_scale)


def _residual(w, f, lse, eps, rho) -> float:
    """|pi 1 - target|_1 for the marginal pi 1 = w e^{f/eps + lse} and its target w
    (balanced) or w e^{-f/rho}, summed as target_i |e^{r_i} - 1| from the log-ratio r;
    inf where anything is NaN or infinite."""
    with np.errstate(over="ignore", invalid="ignore"):
        log_ratio = f / eps + lse if rho is None else f / eps + lse + f / rho
        target = w if rho is None else w * np.exp(-f / rho)
        value = float((target * np.abs(np.expm1(log_ratio))).sum())
    return value if math.isfinite(value) else math.inf


def _warm_start(a, log_a, b, log_b, C, eps, rho, f):
    """f after a few iterations at each eps of the annealing, within WARM_START_SECONDS."""
    deadline = time.monotonic() + WARM_START_SECONDS
    for coarse in _annealing(float(C.max()), eps):
        f, _g, _ = _iterate(a, log_a, b, log_b, C, coarse, rho, f, WARM_START_ITERS, None,
                            deadline)
        if time.monotonic() > deadline:
            break
    return f


def _annealing(largest_cost: float, eps: float) -> list[float]:
    """eps halved from the largest cost down to 2 eps: at most MAX_ANNEALING_LEVELS."""
    levels = []
    level = max(largest_cost, eps)
    while level > 2 * eps and len(levels) < MAX_ANNEALING_LEVELS:
        levels.append(level)
        level /= 2
    return levels


def _iterate(a, log_a, b, log_b, C, eps, rho, f, budget, stop, deadline):
    """Over-relaxed alternating updates g <- (1 - w) g + w T(f), f <- (1 - w) f + w T(g)
    (w = :data:`OVER_RELAXATION`; the fixed point is the same as plain Sinkhorn's, reached
    several times faster). Every :data:`CHECK_EVERY` iterations, and at the last, g is the
    exact response to f (w = 1 for that step), so that the column marginal holds and the
    row residual is the whole optimality residual. Should the residual blow up, the
    iteration falls back to plain Sinkhorn (w = 1) from the best state seen. Ends by the
    stopping rule (``stop``: see :func:`_stops`), ``budget`` iterations or ``deadline``
    (a time.monotonic() value), whichever first, at a check.
    Returns (f, g, (residual, iterations)), the residual that of (f, g)."""
    lam = 1.0 if rho is None else rho / (rho + eps)
    omega, done, g = OVER_RELAXATION, 0, None
    best = (math.inf, f)
    while True:
        done += 1
        check = done % CHECK_EVERY == 0 or done >= budget or (stop is not None and done == 1)
        g_new = -lam * eps * _lse(log_a[:, None] + (f[:, None] - C) / eps, axis=0)
        g = g_new if g is None or check else (1 - omega) * g + omega * g_new
        row_lse = _lse(log_b[None, :] + (g[None, :] - C) / eps, axis=1)
        if check:
            residual = _residual(a, f, row_lse, eps, rho)
            if (done >= budget or time.monotonic() > deadline
                    or _stops(a, b, C, f, g, eps, rho, residual, stop)):
                return f, g, (residual, done)
            if not residual < 1e3 * best[0] and omega != 1.0:   # diverging (or NaN)
                omega, f, g = 1.0, best[1], None
                continue
            best = min(best, (residual, f), key=lambda item: item[0])
        f = (1 - omega) * f + omega * (-lam * eps * row_lse)


def _lse(values: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp along ``axis``, max-shifted (-inf rows stay -inf)."""
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(values - top).sum(axis=axis, keepdims=True)) + top).squeeze(axis)


def _objectives(a, b, C, f, g, eps, rho) -> tuple[float, float, np.ndarray]:
    """(primal, dual) objectives of OT_eps at the potentials (f, g), and the plan they define."""
    log_ratio = (f[:, None] + g[None, :] - C) / eps          # log(pi / (a x b))
    plan = a[:, None] * b[None, :] * np.exp(log_ratio)
    mass_plan, mass_ab = float(plan.sum()), float(a.sum() * b.sum())
    kl_plan = float((plan * log_ratio).sum()) - mass_plan + mass_ab
    primal = float((plan * C).sum()) + eps * kl_plan
    if rho is None:
        dual = float(a @ f + b @ g)
    else:
        rows, cols = plan.sum(1), plan.sum(0)
        primal += rho * (_kl(rows, a) + _kl(cols, b))
        dual = float(rho * (a @ (1 - np.exp(-f / rho)) + b @ (1 - np.exp(-g / rho))))
    dual -= eps * (mass_plan - mass_ab)
    return primal, dual, plan


def _kl(u, v) -> float:
    return float((xlogy(u, u) - xlogy(u, v) - u + v).sum())


def _check_size(N: int, M: int, debias: bool) -> None:
    largest = max(N * M, N * N, M * M) if debias else N * M
    need = 3 * 8 * largest   # the cost, the plan and one exponent matrix at a time
    if need > MAX_MATRIX_BYTES:
        # a fixed cap, not the free memory of the moment: refused again anywhere
        raise MemoryBudgetExceeded(f"the float64 Sinkhorn reference at N={N}, M={M} "
                                   "(full cost and plan matrices)", need, MAX_MATRIX_BYTES,
                                   retryable=False)


def _power(name: str, value: float, p: int) -> float:
    """value**p in float64, refused where it is 0 or overflows."""
    with np.errstate(over="ignore", under="ignore"):
        result = float(np.float64(value) ** p)
    if not (0.0 < result < math.inf):
        info = np.finfo(np.float64)
        low, high = float(info.tiny) ** (1 / p), float(info.max) ** (1 / p)
        raise KPBenchError(f"{name}={value!r} with p={p}: {name}^p = {result!r} is not a "
                           f"positive float64; the float64 reference takes {name} between "
                           f"{low:.3g} and {high:.3g}")
    return result


def _check_scales(x, y, p: int, blur: float, eps: float) -> None:
    """Refuse clouds whose largest cost (diameter^p / p, bounding box of both clouds)
    overflows float64, or dwarfs eps beyond float64's resolution (see the module docstring)."""
    points = np.concatenate([x, y])
    if not np.isfinite(points).all():
        raise KPBenchError("the float64 Sinkhorn reference got coordinates that are NaN or "
                           "infinite")
    with np.errstate(over="ignore"):
        extent = points.max(0) - points.min(0)
        largest = float(np.linalg.norm(extent) ** p / p)
    if not math.isfinite(largest):
        raise KPBenchError(f"the clouds' largest cost |x - y|^{p}/{p} overflows float64 "
                           f"(coordinates up to {float(np.abs(points).max()):.3g}); "
                           "rescale the coordinates")
    resolution = np.finfo(np.float64).eps
    if largest > 0 and eps / largest < resolution:
        raise KPBenchError(f"blur={blur!r} (eps = blur^{p} = {eps:.3g}) is {eps / largest:.3g} "
                           f"times the clouds' largest cost {largest:.3g}, below float64's "
                           f"resolution {resolution:.3g}: the float64 reference cannot solve it; "
                           "rescale the coordinates or raise the blur")
    if largest > 0 and largest / eps < math.sqrt(resolution):
        raise KPBenchError(f"blur={blur!r} (eps = blur^{p} = {eps:.3g}) is {eps / largest:.3g} "
                           f"times the clouds' largest cost {largest:.3g}, beyond 1/sqrt of "
                           f"float64's resolution ({1 / math.sqrt(resolution):.3g}): the costs "
                           "vanish in the potentials' rounding (blur 1e8 on the unit square read "
                           "2.2 for 0.048, 'converged'); lower the blur")


def np_sinkhorn(a, x, b, y, *, p: int, blur: float, reach=None, debias: bool = True,
                iters=None, tol=None, max_iter: int | None = None, scaling=None,
                gradient: bool = False):
    """S_eps (debias) or OT_eps between (a, x) and (b, y), eps = blur^p, in float64.

    Returns (value, f, g, info): the dual value; the potentials (debiased: f_ab - f_aa,
    g_ab - g_bb; balanced ones shifted so that <a, f> = <b, g>, which fixes their
    additive constant); info with "primal", "dual", "marginal_err" (the largest residual
    of the problems solved), "converged", "iterations" (of the cross problem).
    ``tol`` overrides :data:`TOLERANCE`; ``iters`` runs exactly that many plain
    iterations. Options of the torch solver (``scaling``) do not apply here: this
    reference always solves to its tolerance. ``gradient``: also info["grad_x"], the
    gradient w.r.t. x at the optimum (envelope theorem: sum_j pi_ij grad_x C(x_i, y_j),
    minus sum_k pi^aa_ik grad_x C(x_i, x_k) when debiased).
    """
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    _check_size(x.shape[0], y.shape[0], debias)
    eps = _power("blur", blur, p)
    rho = None if reach is None else _power("reach", reach, p)
    _check_scales(x, y, p, blur, eps)
    options = dict(tol=TOLERANCE if tol is None else float(tol),
                   max_iter=MAX_ITER if max_iter is None else max_iter, iters=iters)
    cross = solve_ot(a, cost_matrix(x, y, p), b, eps, rho, **options)
    solutions = [cross]
    f, g = cross.f, cross.g
    primal, dual = cross.primal, cross.dual
    if debias:
        self_a = solve_symmetric_ot(a, cost_matrix(x, x, p), eps, rho, **options)
        self_b = solve_symmetric_ot(b, cost_matrix(y, y, p), eps, rho, **options)
        solutions += [self_a, self_b]
        f, g = f - self_a.f, g - self_b.f
        mass_term = eps * (a.sum() - b.sum()) ** 2 / 2
        primal -= 0.5 * (self_a.primal + self_b.primal) - mass_term
        dual -= 0.5 * (self_a.dual + self_b.dual) - mass_term
    if gradient:
        info_grad = np.einsum("ij,ijk->ik", cross.plan, cost_gradient(x, y, p))
        if debias:
            info_grad -= np.einsum("ij,ijk->ik", self_a.plan, cost_gradient(x, x, p))
    if reach is None:
        shift = (a @ f - b @ g) / (2 * a.sum())
        f, g = f - shift, g + shift
    info = {
        "primal": float(primal), "dual": float(dual),
        "marginal_err": max(s.residual for s in solutions),
        "converged": all(s.converged for s in solutions),
        "iterations": cross.iterations,
    }
    if gradient:
        info["grad_x"] = info_grad
    return float(dual), f, g, info
