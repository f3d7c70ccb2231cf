"""POT (Python Optimal Transport) as kpbench backends, on its torch backend.

``pot``: ``ot.solve_sample(..., reg=, reg_type="KL")`` -- log-domain Sinkhorn
(``ot.bregman.sinkhorn_log``) on the dense cost matrix, value = the primal
<pi, C> + eps KL(pi | a x b) (+ rho KL of the marginals when unbalanced: the same
objective as ours), ``debias=True``: OT(a, b) - OT(a, a)/2 - OT(b, b)/2 (no
eps (m_a - m_b)^2 / 2 term: equal to ours for equal masses), gradients by POT's
envelope option (``grad="envelope"``).

Not wired (``unsupported``, with the reason): unbalanced OT -- solve_sample's unbalanced
KL value read 1.9e-10 here where the primal is 0.098 (40 vs 30 points, reach .5, blur .1),
not yet diagnosed; its lazy solver (``lazy=True``) returns no entropic value
(``value`` None, only ``value_linear``).

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

from kpbench.backends.base import Backend, Capabilities

from .common import package_available, refuse, sinkhorn_info

MAX_ITER, STOP_THR = 1000, 1e-9   # POT's defaults in solve_sample (Sinkhorn)


def _options(p, blur, reach):
    """(metric, reg, unbalanced, factor): POT's problem is ``1/factor`` times ours."""
    factor = 2.0 if p == 2 else 1.0
    eps = blur**p
    rho = None if reach is None else factor * reach**p
    return ("sqeuclidean" if p == 2 else "euclidean"), factor * eps, rho, factor


def _sinkhorn(bk, a, x, b, y, *, p, blur, scaling, reach, debias, potentials, iters, tol,
              max_iter, return_info, schedule="kpbench"):
    refuse(potentials, bk, "potentials=True (its potentials are on another scale)")
    refuse(reach is not None, bk, "unbalanced OT (reach=) here: its value disagrees with the "
           "primal (see kpbench.peers.pot)")
    import ot

    metric, reg, rho, factor = _options(p, blur, reach)
    if iters is not None:
        max_iter, tol = int(iters), 0.0
    result = ot.solve_sample(x, y, a, b, metric=metric, reg=reg, reg_type="KL", unbalanced=rho,
                             max_iter=MAX_ITER if max_iter is None else max_iter,
                             tol=STOP_THR if tol is None else tol, debias=debias,
                             grad="envelope")
    value = result.value / factor
    if not return_info:
        return value
    return value, sinkhorn_info(_iterations(result), [blur**p])


def _iterations(result) -> int | None:
    log = result.log or {}
    cross = log.get("res_ab")
    if cross is not None:
        log = cross.log or {}
    niter = log.get("niter")
    return None if niter is None else int(niter)


class PotBackend(Backend):
    name = "pot"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=True, primitives=False)
    own_losses = {"sinkhorn": _sinkhorn}

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
                "grad": "envelope"}

    def memory_estimate(self, op, N, M, D, itemsize, grad=False):
        # the cost matrix, the plan and a log-domain temporary per problem
        return int(4 * N * M * itemsize)

    def memory_budget(self, device):
        from kpbench.backends.torch_dense import TorchBackend

        return TorchBackend().memory_budget(device)
