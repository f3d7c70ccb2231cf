"""POT (Python Optimal Transport) as kpbench backends, on its torch backend.

``pot``: ``ot.solve_sample(..., reg=, reg_type="KL")`` -- log-domain Sinkhorn
(``ot.bregman.sinkhorn_log``) on the dense cost matrix, value = the primal
<pi, C> + eps KL(pi | a x b) (+ rho KL of the marginals when unbalanced: the same
objective as ours), ``debias=True``: OT(a, b) - OT(a, a)/2 - OT(b, b)/2 (no
eps (m_a - m_b)^2 / 2 term: equal to ours for equal masses), gradients by POT's
envelope option (``grad="envelope"``).

Unbalanced OT (``reach=``): POT's plan, our evaluation of its objective. POT's solvers
return the right plan, but the value they report (``log["total_cost"]``, which
``solve_sample`` returns) uses ``nx.kl_div`` without ``mass=True``: the KL terms lack
their mass parts (- m(pi) + m(q)), which do not cancel when masses change. That
"value" is ~0 at the optimum (4e-13 where the primal is 0.059: 40 vs 30 points, reach .5,
blur .1). So ``pot`` solves with ``ot.unbalanced.sinkhorn_unbalanced(method=
"sinkhorn_stabilized")`` (``solve_sample``'s unbalanced path is the plain multiplicative
one, which underflows at small blur) and evaluates the primal
<pi, C> + eps KL(pi | a x b) + rho KL(pi 1 | a) + rho KL(pi^T 1 | b) (generalized KLs)
at its plan, held fixed: by the envelope theorem autograd of that expression is the
gradient of the optimal value. POT's stopping test (the relative change of its scalings)
can pass on a plan far from the optimum (0.19 where the truth is 0.11, after 10
iterations, masses .7/1.3, blur .05): kpbench measures the plan's fixed-point residual
(:func:`plan_residual`, the row's ``marginal_err``) and calls the solve converged only
when POT does and that residual is below RESIDUAL_TOL of the mass. Debiased: OT(a, b) - OT(a, a)/2 - OT(b, b)/2
+ eps (m_a - m_b)^2 / 2, as ours. Not wired: its lazy solver (``lazy=True``) returns no
entropic value (``value`` None, only ``value_linear``).

What POT's options mean next to ours:

* cost: POT's "sqeuclidean" is |x - y|^2, ours |x - y|^2 / 2 for p=2: POT is called with
  reg = 2 eps, unbalanced = 2 rho, and its value halved (the same problem, scaled);
  p=1: metric "euclidean", reg = eps.
* ``numItermax`` / ``stopThr`` (solve_sample's ``max_iter`` / ``tol``): POT iterates plain
  Sinkhorn from zero potentials (no eps-scaling: ``scaling`` does not apply) until the
  marginal violation |pi^T 1 - b| (checked every 10 iterations) is below stopThr, at most
  numItermax iterations; defaults 1000 and 1e-9. Ours: ``tol`` bounds the change of the
  potentials, ``max_iter`` the iterations -- passed through as POT's tol/max_iter when
  given; ``iters=n`` runs POT with max_iter=n, tol=0 (a fixed count).
"""
from __future__ import annotations

import contextlib
import warnings

from kpbench.backends.base import Backend, Capabilities
from kpbench.backends.sinkhorn_types import SinkhornOptions, SinkhornResult

from .common import DenseMemory, package_available, refuse

MAX_ITER, STOP_THR = 1000, 1e-9   # POT's defaults in solve_sample (Sinkhorn)
UNBALANCED_STOP_THR = 1e-9         # sinkhorn_unbalanced's relative change of u, v
RESIDUAL_TOL = 1e-6                # kpbench's check of an unbalanced plan (plan_residual), x mass


def _options(p, blur, reach):
    """(metric, reg, unbalanced, factor): POT's problem is ``1/factor`` times ours."""
    factor = 2.0 if p == 2 else 1.0
    eps = blur**p
    rho = None if reach is None else factor * reach**p
    return ("sqeuclidean" if p == 2 else "euclidean"), factor * eps, rho, factor


def _sinkhorn(bk, a, x, b, y, *, options: SinkhornOptions) -> SinkhornResult:
    refuse(options.potentials, bk, "potentials=True (its potentials are on another scale)")
    import ot

    p, blur, tol, max_iter = options.p, options.blur, options.tol, options.max_iter
    metric, reg, rho, factor = _options(p, blur, options.reach)
    if options.iters is not None:
        max_iter, tol = options.iters, 0.0
    max_iter = MAX_ITER if max_iter is None else max_iter
    if options.reach is not None:
        value, iterations, converged, residual = _unbalanced(
            a, x, b, y, metric, reg, rho, options.debias, max_iter,
            UNBALANCED_STOP_THR if tol is None else tol)
        return SinkhornResult(value=value / factor, iterations=iterations,
                              eps_schedule=[blur**p], marginal_err=residual,
                              converged=converged)
    with _convergence_warnings() as converged:
        result = ot.solve_sample(x, y, a, b, metric=metric, reg=reg, reg_type="KL",
                                 unbalanced=rho, max_iter=max_iter,
                                 tol=STOP_THR if tol is None else tol, debias=options.debias,
                                 grad="envelope")
    return SinkhornResult(value=result.value / factor, iterations=_iterations(result),
                          eps_schedule=[blur**p], converged=converged[0])


@contextlib.contextmanager
def _convergence_warnings():
    """Yields [converged]: False once POT warns "... did not converge" inside (at a fixed
    iteration count that is expected: True/False is then about the tolerance). POT's
    warnings are passed on."""
    state = [True]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield state
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    state[0] = not any("did not converge" in str(w.message) for w in caught)


def _unbalanced(a, x, b, y, metric, reg, rho, debias, max_iter, tol):
    """(value in POT's units, iterations of the cross problem, whether all its solves
    converged -- POT's word and kpbench's residual check --, the largest residual); see the
    module doc."""
    cross, iterations, converged, residual = _unbalanced_ot(a, x, b, y, metric, reg, rho,
                                                            max_iter, tol)
    if not debias:
        return cross, iterations, converged, residual
    self_a, _, converged_a, residual_a = _unbalanced_ot(a, x, a, x, metric, reg, rho, max_iter, tol)
    self_b, _, converged_b, residual_b = _unbalanced_ot(b, y, b, y, metric, reg, rho, max_iter, tol)
    mass_term = reg * (a.sum() - b.sum()) ** 2 / 2
    return (cross - (self_a + self_b) / 2 + mass_term, iterations,
            converged and converged_a and converged_b, max(residual, residual_a, residual_b))


def _unbalanced_ot(a, x, b, y, metric, reg, rho, max_iter, tol):
    import ot
    import torch

    cost = ot.dist(x, y, metric=metric)
    # at blur .05 POT's stabilized solver does not converge and its plan is then wrong by
    # orders of magnitude: ``converged`` says so
    with _convergence_warnings() as converged:
        plan, log = ot.unbalanced.sinkhorn_unbalanced(
            a.detach(), b.detach(), cost.detach(), reg, rho, method="sinkhorn_stabilized",
            numItermax=max_iter, stopThr=tol, log=True)
    plan = plan.detach()

    def kl(p, q):   # generalized KL: sum p log(p / q) - p + q
        return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q) - p + q).sum()

    value = ((plan * cost).sum() + reg * kl(plan, a[:, None] * b[None, :])
             + rho * (kl(plan.sum(1), a) + kl(plan.sum(0), b)))
    residual = plan_residual(plan, a.detach(), b.detach(), cost.detach(), reg, rho)
    mass = float(plan.sum()) or 1.0
    converged = converged[0] and residual <= RESIDUAL_TOL * mass
    return value, len(log.get("err", [])) or None, converged, residual


def plan_residual(plan, a, b, cost, reg, rho) -> float:
    """How far ``plan`` is from the optimum of the unbalanced problem, measured by kpbench
    (POT's own stopping test -- the relative change of its scalings -- can pass on a plan of
    the wrong mass). At the optimum, plan = a x b exp((f + g - C) / reg) with the potentials
    given by its marginals, f = -rho log(plan 1 / a), g = -rho log(plan^T 1 / b): the
    residual is the L1 distance between the marginals of that implied plan and the plan's
    own, in units of mass (0 at the optimum; inf where a row or column of the plan is 0)."""
    import torch

    rows, cols = plan.sum(1), plan.sum(0)
    if not (bool((rows > 0).all()) and bool((cols > 0).all())):
        return float("inf")
    f, g = -rho * torch.log(rows / a), -rho * torch.log(cols / b)
    log_k = (f[:, None] + g[None, :] - cost) / reg + torch.log(a)[:, None] + torch.log(b)[None, :]
    implied_rows, implied_cols = log_k.logsumexp(1).exp(), log_k.logsumexp(0).exp()
    return float((implied_rows - rows).abs().sum() + (implied_cols - cols).abs().sum())


def _iterations(result) -> int | None:
    log = result.log or {}
    cross = log.get("res_ab")
    if cross is not None:
        log = cross.log or {}
    niter = log.get("niter")
    return None if niter is None else int(niter)


class PotBackend(DenseMemory, Backend):
    name = "pot"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=True, primitives=False)
    own_losses = {"sinkhorn": _sinkhorn}
    # the cost matrices, plans and log-domain temporaries of its three problems (debiased),
    # alive together until the garbage collector frees the earlier ones; measured (float32
    # Sinkhorn, N = M = 1000 and 1500, scripts/peer_memory.py, five runs): 8.0 to 17.0
    # N x M buffers, 12.0 to 18.8 with backward
    BUFFERS = {False: 20, True: 24}

    def available(self):
        return package_available("ot")

    def settings(self) -> dict:
        import ot

        return {"library": "pot", "version": ot.__version__, "function": "ot.solve_sample",
                "method": "sinkhorn_log",
                "numItermax": MAX_ITER, "stopThr": STOP_THR,
                "stopping": "marginal violation |pi^T 1 - b| < stopThr, checked every 10 "
                            "iterations, or numItermax iterations; no eps-scaling",
                "cost": "p=2: sqeuclidean with reg=2 eps, value halved (= ours)",
                "grad": "envelope",
                "unbalanced": "ot.unbalanced.sinkhorn_unbalanced(method='sinkhorn_stabilized', "
                              f"stopThr={UNBALANCED_STOP_THR}) for the plan; the primal "
                              "objective at that plan evaluated by kpbench (POT's total_cost "
                              "omits the KL mass terms); converged only when the plan's "
                              f"fixed-point residual is below {RESIDUAL_TOL} x its mass"}
