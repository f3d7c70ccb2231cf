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

import torch

from kpbench.backends.base import check_blur, check_p
from kpbench.errors import KPBenchError

MAX_ITER = 1000   # default cap on iterations of the tol phase


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


def check_solver_options(*, iters, tol, max_iter) -> None:
    """Clear errors for the options of the solver (before any work is done)."""
    if iters is not None and (isinstance(iters, bool) or int(iters) != iters or iters < 1):
        raise KPBenchError(f"iters must be an integer >= 1, got {iters!r}")
    if tol is not None and not (math.isfinite(tol) and tol >= 0):
        raise KPBenchError(f"tol must be a finite number >= 0, got {tol!r}")
    if max_iter is not None and (isinstance(max_iter, bool) or int(max_iter) != max_iter
                                 or max_iter < 1):
        raise KPBenchError(f"max_iter must be an integer >= 1, got {max_iter!r}")


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


class _UnbalancedWeight(torch.autograd.Function):
    """Multiply by rho + eps/2 in the forward pass and by rho + eps in the backward pass.

    The unbalanced dual value is (rho + eps/2) <a, 1 - exp(-f/rho)> (+ same for b), but
    its gradient w.r.t. the positions, through f, needs the factor rho + eps to equal
    the envelope-theorem gradient sum_j pi_ij grad C (Sejourne et al., 2019).
    """

    @staticmethod
    def forward(ctx, u, rho, eps):
        ctx.factor = rho + eps
        return (rho + eps / 2) * u

    @staticmethod
    def backward(ctx, grad):
        return ctx.factor * grad, None, None


def diameter(x, y) -> float:
    """The diagonal of the bounding box of both clouds (computed in float64); refuses
    clouds whose costs would overflow their dtype."""
    with torch.no_grad():
        points = torch.cat([x, y])
        extent = (points.max(0).values - points.min(0).values).double()
        value = float(torch.linalg.norm(extent))
    largest = torch.finfo(x.dtype).max
    if not value**2 < largest:
        raise KPBenchError(f"the clouds span {value:.3g}: squared distances overflow "
                           f"{str(x.dtype).replace('torch.', '')}; rescale the coordinates")
    return value


class SinkhornSolver:
    """The log-domain Sinkhorn loop on a backend's softmin (see the module docstring)."""

    def __init__(self, bk, a, x, b, y, *, p, reach, debias):
        self.bk, self.p, self.reach, self.debias = bk, p, reach, debias
        self.a, self.x, self.b, self.y = a, x, b, y
        self.a_log, self.b_log = torch.log(a), torch.log(b)

    def _smin(self, u, v, h, eps):
        # v detached: the envelope gradient of <a, f(x)> w.r.t. x goes through x only.
        lam = damping(eps, self.reach, self.p)
        return lam * self.bk.softmin(u, v.detach(), h, eps=eps, p=self.p, validate=False)

    def init(self, eps):
        x, y = self.x.detach(), self.y.detach()
        state = [self._smin(x, y, self.b_log.detach(), eps),
                 self._smin(y, x, self.a_log.detach(), eps), None, None]
        if self.debias:
            state[2] = self._smin(x, x, self.a_log.detach(), eps)
            state[3] = self._smin(y, y, self.b_log.detach(), eps)
        return state

    def update(self, state, eps, x=None, y=None):
        """One symmetric update from ``state``; the potentials enter only through h (detached)."""
        x = self.x.detach() if x is None else x
        y = self.y.detach() if y is None else y
        f_ba, g_ab, f_aa, g_bb = [None if s is None else s.detach() for s in state]
        a_log, b_log = self.a_log.detach(), self.b_log.detach()
        new = [self._smin(x, y, b_log + g_ab / eps, eps), self._smin(y, x, a_log + f_ba / eps, eps),
               None, None]
        if self.debias:
            new[2] = self._smin(x, x, a_log + f_aa / eps, eps)
            new[3] = self._smin(y, y, b_log + g_bb / eps, eps)
        return new

    def alternate(self, state, eps):
        """Convergence phase at fixed eps: alternating (Gauss-Seidel) updates of the cross
        potentials, which converge much faster than averaged ones at small eps; the
        symmetric self-potentials keep their averaged update."""
        f_ba, g_ab, f_aa, g_bb = state
        x, y = self.x.detach(), self.y.detach()
        f_ba = self._smin(x, y, self.b_log.detach() + g_ab / eps, eps)
        g_ab = self._smin(y, x, self.a_log.detach() + f_ba / eps, eps)
        if self.debias:
            _, _, f_new, g_new = self.update(state, eps)
            f_aa, g_bb = 0.5 * (f_aa + f_new), 0.5 * (g_bb + g_new)
        return [f_ba, g_ab, f_aa, g_bb]

    def solve(self, schedule, tol, max_iter):
        with torch.no_grad():
            state = self.init(schedule[0])
            iterations = 0
            for eps in schedule:
                state = _average(state, self.update(state, eps))
                iterations += 1
            while tol is not None and iterations < max_iter:
                new = self.alternate(state, schedule[-1])
                change = float((new[0] - state[0]).abs().max())
                state, iterations = new, iterations + 1
                if change < tol:
                    break
        # the differentiable extrapolation, at the final eps, from the converged potentials
        final = self.update(state, schedule[-1], x=self.x, y=self.y)
        return final, iterations

    def value(self, state, eps):
        f_ba, g_ab, f_aa, g_bb = state
        a, b = self.a, self.b
        if self.reach is None:
            if self.debias:
                return (a * (f_ba - f_aa)).sum() + (b * (g_ab - g_bb)).sum()
            return (a * f_ba).sum() + (b * g_ab).sum()
        rho = self.reach**self.p
        if self.debias:
            u = torch.exp(-f_aa / rho) - torch.exp(-f_ba / rho)
            v = torch.exp(-g_bb / rho) - torch.exp(-g_ab / rho)
        else:
            u, v = 1 - torch.exp(-f_ba / rho), 1 - torch.exp(-g_ab / rho)
        return ((a * _UnbalancedWeight.apply(u, rho, eps)).sum()
                + (b * _UnbalancedWeight.apply(v, rho, eps)).sum())


def _average(old, new):
    return [None if o is None else 0.5 * (o + n) for o, n in zip(old, new)]
