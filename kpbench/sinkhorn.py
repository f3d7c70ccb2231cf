"""The log-domain Sinkhorn solver every torch-based backend shares (torch, keops, cuda).

It runs on a backend's softmin only. Symmetric updates with epsilon-scaling from the
diameter of the clouds down to blur**p; optionally a convergence phase at the final
eps (alternating updates, ``tol``); the loop runs without autograd and one last
extrapolation step is differentiated (envelope theorem): the gradient w.r.t. x_i is
sum_j pi_ij grad C(x_i, y_j) without backpropagating through the iterations.
The float64 reference (:mod:`kpbench.reference.sinkhorn`) is written independently.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from kpbench.backends.base import check_blur, check_p
from kpbench.backends.sinkhorn_types import (MAX_ITER, SCHEDULES, SinkhornOptions,
                                             SinkhornResult, check_solver_options)
from kpbench.errors import KPBenchError

__all__ = ["MAX_ITER", "SCHEDULES", "SinkhornOptions", "SinkhornResult", "SinkhornSolver",
           "check_solver_options", "diameter", "epsilon_schedule", "fixed_schedule", "solve"]


def epsilon_schedule(diameter: float, blur: float, p: int, scaling: float,
                     kind: str = "kpbench") -> list[float]:
    """eps values from diameter**p down to blur**p, shrinking the blur by ``scaling`` per step.

    ``kind="kpbench"``: each eps once. A cloud of one point, or of identical points, has
    diameter 0: the schedule then starts (and ends) at blur**p instead of taking log(0).
    ``kind="geomloss"``: GeomLoss's list (0.2.x-0.3.x, ``epsilon_schedule`` of its
    ``sinkhorn_divergence``), computed as it does: diameter**p first and then again at the
    start of exp(arange(p log diameter, p log blur, p log scaling)), then blur**p -- the
    first eps runs twice. With it, :func:`kpbench.losses.sinkhorn` equals GeomLoss
    (tensorized, float64) to round-off in value and position gradient for balanced p=2
    and p=1 without debias (for a raw value with total mass m != 1, ours adds
    eps (m^2 - m): see :meth:`SinkhornSolver.value`); unbalanced, the debiased value to round-off, the gradients
    (rho + eps)/(rho + eps/2) times GeomLoss's (ours exact: its UnbalancedWeight backward
    is never called), the raw value (debias=False) plus eps (m_a m_b - (m_a + m_b)/2);
    p=1 debiased to ~4e-4 (GeomLoss tensorized clamps |x - y| >= 1e-4; its online
    backend, unclamped, agrees to ~1e-8, its float32 1/eps). Tests: tests/test_peers.py.
    """
    blur = check_blur(blur)
    check_p(p)
    if not (0.0 < scaling < 1.0):
        raise KPBenchError(f"scaling must be in (0, 1), got {scaling!r}")
    if kind == "geomloss":
        return _geomloss_schedule(float(diameter), blur, p, scaling)
    if kind != "kpbench":
        raise KPBenchError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    radius = max(float(diameter), blur)
    steps = int(math.floor(math.log(blur / radius) / math.log(scaling))) if radius > blur else 0
    schedule = [(radius * scaling**k) ** p for k in range(steps + 1)]
    if schedule[-1] > blur**p * (1 + 1e-12):
        schedule.append(blur**p)
    else:
        schedule[-1] = blur**p
    return schedule


def _geomloss_schedule(diameter: float, blur: float, p: int, scaling: float) -> list[float]:
    diameter = diameter if diameter > 0 else blur   # GeomLoss itself would take log(0)
    exponents = np.arange(p * np.log(diameter), p * np.log(blur), p * np.log(scaling))
    return [diameter**p] + [float(np.exp(e)) for e in exponents] + [blur**p]


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


def diameter(x, y, blur: float | None = None, p: int = 2, reach: float | None = None) -> float:
    """The diagonal of the bounding box of both clouds (computed in float64), after refusing
    (KPBenchError) what the clouds' dtype cannot compute:

    * squared distances that overflow (:func:`kpbench.backends.base.check_distances`);
    * given ``blur``: eps = blur**p, and given ``reach``: rho = reach**p, that are not
      normal numbers of the dtype (blur=1e-200: eps = 0, a division by zero; blur=1e200:
      Python's ** overflows; float32 blur=1e30: eps = inf, then NaN);
    * exponents C/eps that overflow the dtype (with room for the potentials added to them);
    * eps, or rho, more than 1/sqrt(resolution) times the largest cost diameter^p / p:
      the potentials' rounding (~eps x resolution: the log-weights absorb C/eps) and the
      unbalanced terms e^{-f/rho} (~rho x resolution) then take more than half of the
      dtype's digits of any value these clouds can have (float32, unit square, p=2,
      measured: S off by 2 % at blur 100, -0.05 for 0.048 at blur 1000, 0 at 1e4; float64
      0 at blur 1e8; reach 100 in float32 3 % off, 0 at 1e4). Clouds of one point
      (diameter 0) have no such scale and are not refused by it.
    """
    from kpbench.backends.base import check_distances, check_scale, dtype_info, extent, power

    value = extent(x, y)
    dtype = str(x.dtype).replace("torch.", "")
    check_distances(value, dtype)
    if blur is None:
        return value
    info = dtype_info(dtype)
    largest, eps = value**p / p, power(blur, p)
    check_scale(eps, f"eps = blur^{p} at blur={blur!r}", dtype)
    if not largest / eps < float(info.max) / 16:
        raise KPBenchError(f"the clouds span {value:.3g}: at blur {blur:g} the exponents C/eps "
                           f"reach {largest / eps:.3g} and overflow {dtype}; "
                           "rescale the coordinates")
    scales = [("blur", blur, eps)]
    if reach is not None:
        rho = power(reach, p)
        check_scale(rho, f"rho = reach^{p} at reach={reach!r}", dtype)
        scales.append(("reach", reach, rho))
    limit = largest / math.sqrt(float(info.eps))
    for name, given, scale in scales:
        if largest > 0 and scale > limit:
            raise KPBenchError(
                f"{name}={given!r} ({name}^{p} = {scale:.3g}) is {scale / largest:.3g} times the "
                f"clouds' largest cost {largest:.3g}: in {dtype} (resolution "
                f"{float(info.eps):.3g}) its rounding would take more than half of the value's "
                f"digits; allowed: {name}^{p} <= {limit:.3g}"
                + (" (or reach=None: balanced OT)" if name == "reach" else "")
                + (", or use float64" if dtype != "float64" else ""))
    return value


class Potentials(NamedTuple):
    """The solver's state: the cross potentials and the self ones (None without debias)."""

    f_ba: object
    g_ab: object
    f_aa: object = None
    g_bb: object = None


class SinkhornSolver:
    """The log-domain Sinkhorn loop on a backend's prepared pairs (see the module docstring).

    State: :class:`Potentials` (f_ba, g_ab, f_aa, g_bb; the self ones None without debias).
    The loop runs on pairs of the detached clouds (:meth:`Backend.prepare_pair`: cost
    matrices or compiled reductions made once per solve); the last, differentiable step
    calls the backend's softmin with the other cloud detached (envelope theorem).
    """

    def __init__(self, bk, a, x, b, y, *, p, reach, debias):
        self.bk, self.p, self.reach, self.debias = bk, p, reach, debias
        self.a, self.x, self.b, self.y = a, x, b, y
        self.a_log, self.b_log = torch.log(a).detach(), torch.log(b).detach()
        x0, y0 = x.detach(), y.detach()
        self.xy = bk.prepare_pair(x0, y0, p)
        self.xx = bk.prepare_pair(x0, x0, p, reuse=self.xy) if debias else None
        self.yy = bk.prepare_pair(y0, y0, p, reuse=self.xy) if debias else None

    # -- one softmin per potential, on the prepared pairs --------------------------
    def _f(self, g, eps):
        return damping(eps, self.reach, self.p) * self.xy.softmin(self.b_log + g / eps, eps)

    def _g(self, f, eps):
        return damping(eps, self.reach, self.p) * self.xy.softmin_t(self.a_log + f / eps, eps)

    def _self(self, pair, w_log, f, eps):
        return damping(eps, self.reach, self.p) * pair.softmin(w_log + f / eps, eps)

    def init(self, eps):
        zero_a, zero_b = torch.zeros_like(self.a_log), torch.zeros_like(self.b_log)
        cross = self._f(zero_b, eps), self._g(zero_a, eps)
        if not self.debias:
            return Potentials(*cross)
        return Potentials(*cross, self._self(self.xx, self.a_log, zero_a, eps),
                          self._self(self.yy, self.b_log, zero_b, eps))

    def _self_updates(self, state, eps):
        if not self.debias:
            return None, None
        return (self._self(self.xx, self.a_log, state.f_aa, eps),
                self._self(self.yy, self.b_log, state.g_bb, eps))

    def update(self, state, eps):
        """One symmetric (Jacobi) update of all potentials: 4 softmins (2 without debias)."""
        return Potentials(self._f(state.g_ab, eps), self._g(state.f_ba, eps),
                          *self._self_updates(state, eps))

    def alternate(self, state, eps):
        """Convergence phase at fixed eps: alternating (Gauss-Seidel) updates of the cross
        potentials, which converge much faster than averaged ones at small eps; the
        self-potentials keep their averaged update. 4 softmins (2 without debias)."""
        f_aa, g_bb = self._self_updates(state, eps)
        f_ba = self._f(state.g_ab, eps)
        g_ab = self._g(f_ba, eps)
        if self.debias:
            f_aa, g_bb = 0.5 * (state.f_aa + f_aa), 0.5 * (state.g_bb + g_bb)
        return Potentials(f_ba, g_ab, f_aa, g_bb)

    def solve(self, schedule, tol, max_iter):
        """(state, iterations, converged): converged is None without ``tol``, else whether
        the tol phase stopped by tol (not by ``max_iter``)."""
        with torch.no_grad():
            state = self.init(schedule[0])
            iterations = 0
            for eps in schedule:
                state = _average(state, self.update(state, eps))
                iterations += 1
            converged = None if tol is None else False
            while tol is not None and iterations < max_iter:
                new = self.alternate(state, schedule[-1])
                change = float((new.f_ba - state.f_ba).abs().max())
                state, iterations = new, iterations + 1
                if change < tol:
                    converged = True
                    break
        return state, iterations, converged

    # -- the last step, differentiable -------------------------------------------
    def _softmin(self, pair, u, v, h, eps, reverse=False):
        """softmin(u, v, h): on the pair where no gradient flows, else the primitive."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in (u, v, h)):
            return self.bk.softmin(u, v, h, eps=eps, p=self.p, validate=False)
        return pair.softmin_t(h, eps) if reverse else pair.softmin(h, eps)

    def extrapolate(self, state, eps):
        """One symmetric update from ``state`` (detached), differentiable w.r.t. x in the
        potentials on x and w.r.t. y in those on y (the other cloud detached)."""
        lam = damping(eps, self.reach, self.p)
        x, y = self.x, self.y
        f_ba, g_ab, f_aa, g_bb = (None if s is None else s.detach() for s in state)
        cross = (lam * self._softmin(self.xy, x, y.detach(), self.b_log + g_ab / eps, eps),
                 lam * self._softmin(self.xy, y, x.detach(), self.a_log + f_ba / eps, eps,
                                     reverse=True))
        if not self.debias:
            return Potentials(*cross)
        return Potentials(*cross,
                          lam * self._softmin(self.xx, x, x.detach(), self.a_log + f_aa / eps, eps),
                          lam * self._softmin(self.yy, y, y.detach(), self.b_log + g_bb / eps, eps))

    def marginal_error(self, state, final, eps) -> float:
        """|pi 1 - a|_1 + |pi^T 1 - b|_1 of the plan of the cross potentials (f, g) of
        ``state`` (unbalanced: the optimality residual, targets a e^{-f/rho}, b e^{-g/rho}).
        From the extrapolation (f~, g~) of that state: pi 1_i = a_i exp((f_i - f~_i/lam)/eps)."""
        lam = damping(eps, self.reach, self.p)
        with torch.no_grad():
            error = 0.0
            for w, f, f_new in ((self.a, state.f_ba, final.f_ba), (self.b, state.g_ab, final.g_ab)):
                w, f = w.detach(), f.detach()
                marginal = w * torch.exp((f - f_new.detach() / lam) / eps)
                target = w if self.reach is None else w * torch.exp(-f / self.reach**self.p)
                error += float((marginal - target).abs().sum())
        return error

    def value(self, final, eps):
        """Balanced: <a, f> + <b, g> of the extrapolated potentials (debiased: minus the
        self terms), GeomLoss's formula. The raw value (no debias) adds
        eps (m_a m_b - (m_a + m_b) / 2), i.e. eps (m^2 - m) for total masses m: the dual of
        <pi, C> + eps KL(pi | a x b) with a plan of mass m, as the reference and the
        unbalanced value at reach -> inf have it (0 at m = 1, where GeomLoss agrees; it
        cancels in the debiased value). Unbalanced: see :meth:`_unbalanced_value`."""
        f_ba, g_ab, f_aa, g_bb = final
        a, b = self.a, self.b
        if self.reach is not None:
            return self._unbalanced_value(final, eps)
        if self.debias:
            return (a * (f_ba - f_aa)).sum() + (b * (g_ab - g_bb)).sum()
        m_a, m_b = a.sum(), b.sum()
        return (a * f_ba).sum() + (b * g_ab).sum() + eps * (m_a * m_b - (m_a + m_b) / 2)

    def _unbalanced_value(self, final, eps):
        """The unbalanced OT_eps / S_eps in GeomLoss's form (Sejourne et al. 2019, Prop. 12),
        from the extrapolated potentials (f, g) on the clouds:

            OT_eps = rho (m_a + m_b) + eps m_a m_b - (rho + eps/2) (<a, e^{-f/rho}> + <b, e^{-g/rho}>)
            S_eps  = (rho + eps/2) (<a, e^{-f_aa/rho} - e^{-f_ba/rho}> + <b, e^{-g_bb/rho} - e^{-g_ab/rho}>)

        (S = OT_ab - OT_aa/2 - OT_bb/2 + eps (m_a - m_b)^2 / 2: the constants cancel). This
        is the dual objective with its coupling sum_ij a_i b_j e^{(f_i + g_j - C_ij)/eps}
        replaced by its value at the optimum, <a, e^{-f/rho}> = <b, e^{-g/rho}>: exact at
        convergence, and off convergence the potentials' error enters divided by rho, where
        the coupling computed as such divides it by eps (S = -1e18 at blur .001, reach .3).
        The debiased value is GeomLoss's; the raw one adds rho (m_a + m_b) + eps m_a m_b,
        where GeomLoss's has (rho + eps/2)(m_a + m_b): they differ when m_a m_b != (m_a + m_b)/2.
        Gradients: the exponential terms are differentiated with the factor rho + eps
        (forward rho + eps/2), which gives the envelope-theorem gradients of the converged
        value w.r.t. positions and weights; GeomLoss's own gradients keep rho + eps/2 (its
        UnbalancedWeight.backward is never called)."""
        rho = self.reach**self.p
        f_ba, g_ab, f_aa, g_bb = final
        a, b = self.a, self.b

        def damped(w, f):                   # <w, e^{-f/rho}>
            return (w * torch.exp(-f / rho)).sum()

        if self.debias:
            gap = damped(a, f_aa) - damped(a, f_ba) + damped(b, g_bb) - damped(b, g_ab)
            return _weigh(gap, rho, eps)
        m_a, m_b = a.sum(), b.sum()
        return (rho * (m_a + m_b) + eps * m_a * m_b
                - _weigh(damped(a, f_ba) + damped(b, g_ab), rho, eps))


def _weigh(term, rho, eps):
    """(rho + eps/2) * term in value, (rho + eps) * its gradient (Sejourne et al. 2019,
    Prop. 12: the value's and the gradient's factors differ)."""
    return (rho + eps) * term - (eps / 2) * term.detach()


def _average(old, new):
    return Potentials(*(None if o is None else 0.5 * (o + n) for o, n in zip(old, new)))


def solve(bk, a, x, b, y, options: SinkhornOptions) -> SinkhornResult:
    """:func:`kpbench.losses.sinkhorn` on the backend's primitives (inputs validated)."""
    p, blur = options.p, options.blur
    radius = diameter(x, y, blur, p, options.reach)   # refuses scales the dtype cannot compute
    eps_list = (epsilon_schedule(radius, blur, p, options.scaling, options.schedule)
                if options.iters is None else fixed_schedule(blur, p, options.iters))
    eps = eps_list[-1]
    solver = SinkhornSolver(bk, a, x, b, y, p=p, reach=options.reach, debias=options.debias)
    max_iter = MAX_ITER if options.max_iter is None else options.max_iter
    state, iterations, converged = solver.solve(eps_list, options.tol, max_iter)
    final = solver.extrapolate(state, eps)
    result = SinkhornResult(iterations=iterations, eps_schedule=eps_list, converged=converged,
                            marginal_err=solver.marginal_error(state, final, eps))
    if options.potentials:
        result.potentials = ((final.f_ba - final.f_aa, final.g_ab - final.g_bb) if options.debias
                             else (final.f_ba, final.g_ab))
    else:
        result.value = solver.value(final, eps)
    return result
