"""Losses between weighted point clouds, written once on the two backend primitives.

Calling convention (close to GeomLoss): weights first, then positions; ``a=None`` or
``b=None`` means uniform weights; ``backend`` by name or object.

* torch-based backends (torch, keops, cuda): inputs are torch tensors (NumPy arrays
  are converted), the result is a 0-dim tensor, differentiable w.r.t. x, y, a, b.
* the ``numpy`` backend runs its own independent float64 implementation
  (:mod:`kpbench.backends.numpy_ref`) and returns a Python float.

Sinkhorn (log domain): symmetric updates with epsilon-scaling from the diameter
down to blur**p; the loop runs without autograd and one last extrapolation step is
differentiated (envelope theorem): the gradient w.r.t. x_i is sum_j pi_ij grad C(x_i, y_j)
without backpropagating through the iterations.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .backends import Backend, get_backend
from .backends import numpy_ref
from .backends.base import (
    KPBenchError,
    check_blur,
    check_kernel,
    check_p,
    check_pair,
    check_signal,
)
from .backends.schedule import damping, epsilon_schedule, fixed_schedule

MASS_TOLERANCE = 1e-5  # relative difference of total masses tolerated by balanced OT


# -- inputs ------------------------------------------------------------------
def _as_tensor(t, like=None):
    if isinstance(t, torch.Tensor):
        return t
    t = torch.as_tensor(np.asarray(t))
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    return t


def _uniform(n: int, like):
    if isinstance(like, torch.Tensor):
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    return np.full(n, 1.0 / n)


def _mass(w) -> float:
    return float(w.detach().sum() if isinstance(w, torch.Tensor) else w.sum())


def _check_weights(w, n: int, cloud: str, name: str) -> None:
    if len(w.shape) != 1:
        raise KPBenchError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    check_signal(w, n, cloud, name, nonnegative=True)
    if not _mass(w) > 0:
        raise KPBenchError(f"{name} has zero total mass")


def _prepare(a, x, b, y, backend):
    """Resolve the backend, fill uniform weights, convert and validate everything once."""
    bk = get_backend(backend)
    if x is None or y is None:
        raise KPBenchError("both point clouds x and y are required")
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y = _as_tensor(y, like=x) if not isinstance(y, torch.Tensor) else y
    check_pair(x, y)
    a = _uniform(x.shape[0], x) if a is None else a
    b = _uniform(y.shape[0], y) if b is None else b
    if bk.array_module == "torch":
        a, b = _as_tensor(a, like=x), _as_tensor(b, like=x)
        if a.dtype != x.dtype or b.dtype != x.dtype:
            raise KPBenchError(f"weights must have the dtype of the points ({x.dtype}), "
                               f"got a: {a.dtype}, b: {b.dtype}")
    _check_weights(a, x.shape[0], "x", "a")
    _check_weights(b, y.shape[0], "y", "b")
    return bk, a, x, b, y


def _check_balanced(a, b, reach) -> None:
    if reach is not None:
        return
    ma, mb = _mass(a), _mass(b)
    if abs(ma - mb) > MASS_TOLERANCE * max(ma, mb):
        raise KPBenchError(
            f"balanced OT needs equal total masses, got {ma:.6g} and {mb:.6g}: "
            "normalise the weights or pass reach= for unbalanced OT"
        )


def _check_reach(reach) -> float | None:
    return None if reach is None else check_blur(reach, "reach")


def _log_weights(w):
    return torch.log(w) if isinstance(w, torch.Tensor) else np.log(w)


# -- the primitives, with conversion and validation --------------------------
def kernel_product(x, y, b, *, kernel: str = "gaussian", blur: float = 0.1,
                   backend: str | Backend = "torch"):
    """out_i = sum_j k(x_i, y_j) b_j."""
    bk = get_backend(backend)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, b = _as_tensor(y, like=x), _as_tensor(b, like=x)
    return bk.kernel_product(x, y, b, kernel=kernel, blur=blur)


def softmin(x, y, h, *, eps: float, p: int = 2, backend: str | Backend = "torch"):
    """out_i = -eps log sum_j exp(h_j - |x_i - y_j|^p / (p eps))."""
    bk = get_backend(backend)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, h = _as_tensor(y, like=x), _as_tensor(h, like=x)
    return bk.softmin(x, y, h, eps=eps, p=p)


# -- kernel losses -----------------------------------------------------------
def mmd(a=None, x=None, b=None, y=None, *, kernel: str = "gaussian", blur: float = 0.1,
        backend: str | Backend = "torch"):
    """Kernel distance 1/2 |alpha - beta|_k^2 (kernel 'energy': the energy distance)."""
    check_kernel(kernel)
    blur = check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend)
    if bk.array_module == "numpy":
        return numpy_ref.np_mmd(a, x, b, y, kernel=kernel, blur=blur)

    def quad(u, p, v, q):
        return (u * bk.kernel_product(p, q, v, kernel=kernel, blur=blur, validate=False)).sum()

    return 0.5 * (quad(a, x, a, x) + quad(b, y, b, y) - 2 * quad(a, x, b, y))


def energy_distance(a=None, x=None, b=None, y=None, *, backend: str | Backend = "torch"):
    """1/2 |alpha - beta|^2 for the energy kernel k(x, y) = -|x - y|."""
    return mmd(a, x, b, y, kernel="energy", blur=1.0, backend=backend)


def hausdorff(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.1,
              backend: str | Backend = "torch"):
    """Debiased soft Hausdorff divergence built on the softmin (eps = blur**p):
    <a, softmin_beta(x) - softmin_alpha(x)> + <b, softmin_alpha(y) - softmin_beta(y)>."""
    check_p(p)
    blur = check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend)
    if bk.array_module == "numpy":
        return numpy_ref.np_hausdorff(a, x, b, y, p=p, blur=blur)
    eps = blur**p
    a_log, b_log = _log_weights(a), _log_weights(b)

    def smin(u, v, h):
        return bk.softmin(u, v, h, eps=eps, p=p, validate=False)

    f = smin(x, y, b_log) - smin(x, x, a_log)
    g = smin(y, x, a_log) - smin(y, y, b_log)
    return (a * f).sum() + (b * g).sum()


def log_likelihood(a=None, x=None, b=None, y=None, *, blur: float = 0.25,
                   backend: str | Backend = "torch"):
    """Negative log-likelihood of the samples (b, y) under the Gaussian kernel density
    of (a, x): -sum_j b_j log sum_i a_i exp(-|y_j - x_i|^2 / (2 blur^2)), in the log domain."""
    blur = check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend)
    if bk.array_module == "numpy":
        return numpy_ref.np_log_likelihood(a, x, b, y, blur=blur)
    eps = blur**2
    return (b * bk.softmin(y, x, _log_weights(a), eps=eps, p=2, validate=False)).sum() / eps


# -- Sinkhorn ----------------------------------------------------------------
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


def _diameter(x, y) -> float:
    with torch.no_grad():
        points = torch.cat([x, y])
        return float(torch.linalg.norm(points.max(0).values - points.min(0).values))


class _SinkhornSolver:
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


def sinkhorn(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.05,
             scaling: float = 0.5, reach: float | None = None, debias: bool = True,
             backend: str | Backend = "torch", potentials: bool = False,
             iters: int | None = None, tol: float | None = None, max_iter: int = 1000,
             return_info: bool = False):
    """Sinkhorn divergence S_eps (debias=True) or entropic OT_eps (debias=False), eps = blur**p.

    ``iters=None``: eps-scaling from the diameter of the clouds down to blur**p by the
    factor ``scaling``; ``iters=n``: exactly n iterations at eps = blur**p (kernel timing).
    ``tol``: then iterate at the final eps until the potentials move less than tol
    (at most ``max_iter`` iterations in all). ``reach``: unbalanced OT with KL marginal
    penalty rho = reach**p. ``potentials=True`` returns the dual potentials (f, g)
    (debiased: f_ba - f_aa, g_ab - g_bb) instead of the value.
    ``return_info=True`` returns (result, {"iterations", "eps_schedule"}).
    """
    check_p(p)
    blur = check_blur(blur)
    reach = _check_reach(reach)
    bk, a, x, b, y = _prepare(a, x, b, y, backend)
    _check_balanced(a, b, reach)
    if bk.array_module == "numpy":
        value, f, g, info = numpy_ref.np_sinkhorn(
            a, x, b, y, p=p, blur=blur, scaling=scaling, reach=reach, debias=debias,
            iters=iters, tol=tol, max_iter=max_iter)
        result = (f, g) if potentials else value
    else:
        schedule = (epsilon_schedule(_diameter(x, y), blur, p, scaling) if iters is None
                    else fixed_schedule(blur, p, iters))
        solver = _SinkhornSolver(bk, a, x, b, y, p=p, reach=reach, debias=debias)
        state, iterations = solver.solve(schedule, tol, max_iter)
        if potentials:
            f_ba, g_ab, f_aa, g_bb = state
            result = (f_ba - f_aa, g_ab - g_bb) if debias else (f_ba, g_ab)
        else:
            result = solver.value(state, schedule[-1])
        info = {"iterations": iterations, "eps_schedule": schedule}
    return (result, info) if return_info else result


def sinkhorn_multiplicative(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.15,
                            iters: int = 1000, debias: bool = True,
                            backend: str | Backend = "torch"):
    """The classic Sinkhorn u = a / K v, v = b / K^T u with K = exp(-C/eps), eps = blur**p,
    differentiated by backpropagation through the loop.

    It underflows (K v = 0, then inf / NaN) as soon as exp(-C/eps) does, e.g. at
    blur = .15 in float32 for points more than ~2 apart: the result is then NaN, on
    purpose. Use :func:`sinkhorn` (log domain) for a stable computation.
    """
    check_p(p)
    blur = check_blur(blur)
    if int(iters) < 1:
        raise KPBenchError(f"iters must be >= 1, got {iters!r}")
    bk, a, x, b, y = _prepare(a, x, b, y, backend)
    _check_balanced(a, b, None)
    if bk.array_module == "numpy":
        return numpy_ref.np_sinkhorn_multiplicative(a, x, b, y, p=p, blur=blur, iters=iters,
                                                    debias=debias)
    kernel = "gaussian" if p == 2 else "laplacian"  # exp(-C/eps) for C = |x-y|^p / p
    eps = blur**p

    def kp(u, v, w):
        return bk.kernel_product(u, v, w, kernel=kernel, blur=blur, validate=False)

    def ot(a, x, b, y):
        v = torch.ones_like(b)
        for _ in range(int(iters)):
            u = a / kp(x, y, v)
            v = b / kp(y, x, u)
        return eps * ((a * torch.log(u / a)).sum() + (b * torch.log(v / b)).sum())

    if not debias:
        return ot(a, x, b, y)
    return ot(a, x, b, y) - 0.5 * ot(a, x, a, x) - 0.5 * ot(b, y, b, y)


# -- by name -----------------------------------------------------------------
LOSSES = {
    "mmd": mmd,
    "energy": energy_distance,
    "hausdorff": hausdorff,
    "log_likelihood": log_likelihood,
    "sinkhorn": sinkhorn,
    "sinkhorn_multiplicative": sinkhorn_multiplicative,
}


def make_loss(name: str, **params):
    """The loss ``name`` with its parameters bound: ``loss(a, x, b, y, backend=...)``."""
    if name not in LOSSES:
        raise KPBenchError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return functools.partial(LOSSES[name], **params)


__all__ = ["kernel_product", "softmin", "mmd", "energy_distance", "hausdorff", "log_likelihood",
           "sinkhorn", "sinkhorn_multiplicative", "make_loss", "LOSSES"]
