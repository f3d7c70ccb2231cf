"""Losses between weighted point clouds, written once on the two backend primitives.

Calling convention (close to GeomLoss): weights first, then positions; ``a=None`` or
``b=None`` means uniform weights; ``backend`` by name or object.

* torch-based backends (torch, keops, cuda): inputs are torch tensors (NumPy arrays
  are converted), the result is a 0-dim tensor, differentiable w.r.t. x, y, a, b.
* a backend with losses of its own (``Backend.own_losses``: the float64 reference
  :mod:`kpbench.reference`, a peer library) gets the validated inputs and returns
  what it computes (the reference: a Python float).

Each public function validates its parameters and inputs once, then hands them to
:func:`_dispatch`, the one place that picks the backend's own implementation or the
one written here on the primitives. Sinkhorn's solver is :mod:`kpbench.sinkhorn`.
"""
from __future__ import annotations

import contextvars
import functools

import numpy as np
import torch

from .backends import Backend, get_backend
from .backends.base import (check_blur, check_flag, check_kernel, check_number, check_p,
                            check_pair, check_signal, check_whole, dtype_info)
from .errors import KPBenchError, UnsupportedCombination
from .sinkhorn import (MAX_ITER, SCHEDULES, SinkhornSolver, check_solver_options, diameter,
                       epsilon_schedule, fixed_schedule)

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
    """The total mass in float64 (a float32 sum of 5 x 3e38 is inf)."""
    return float(w.detach().double().sum() if isinstance(w, torch.Tensor)
                 else np.asarray(w, dtype=np.float64).sum())


def _check_weights(w, n: int, cloud: str, name: str, dtype: str) -> None:
    if len(w.shape) != 1:
        raise KPBenchError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    check_signal(w, n, cloud, name, nonnegative=True)
    if not _mass(w) > 0:
        raise KPBenchError(f"{name} has zero total mass")
    if not _mass(w) <= float(dtype_info(dtype).max):
        raise KPBenchError(f"{name} has total mass {_mass(w):.3g}, beyond {dtype}'s largest "
                           f"number {float(dtype_info(dtype).max):.3g}: normalise the weights")


def _resolve(backend, op: str, x, y) -> Backend:
    """The backend object; "auto" picks the fastest for this problem from the machine's
    calibration (:mod:`kpbench.backends.auto`, which logs and keeps its choice)."""
    if not (isinstance(backend, str) and backend == "auto"):
        return get_backend(backend)
    x = _as_tensor(x)
    return get_backend("auto", op=op, N=x.shape[0], M=len(y), D=x.shape[1],
                       dtype=str(x.dtype).replace("torch.", ""), device=x.device.type)


def _prepare(a, x, b, y, backend, op: str):
    """Resolve the backend, fill uniform weights, convert and validate everything once."""
    if x is None or y is None:
        raise KPBenchError("both point clouds x and y are required")
    bk = _resolve(backend, op, x, y)
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
    _check_weights(a, x.shape[0], "x", "a", bk.computing_dtype(x))
    _check_weights(b, y.shape[0], "y", "b", bk.computing_dtype(x))
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


# -- the primitives, with conversion and validation --------------------------
def kernel_product(x, y, b, *, kernel: str = "gaussian", blur: float = 0.1,
                   backend: str | Backend = "torch"):
    """out_i = sum_j k(x_i, y_j) b_j."""
    bk = _resolve(backend, "kernel_product", x, y)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, b = _as_tensor(y, like=x), _as_tensor(b, like=x)
    return _run_or_bind(bk.bind_kernel_product(x, y, b, kernel=kernel, blur=blur))


def softmin(x, y, h, *, eps: float, p: int = 2, backend: str | Backend = "torch"):
    """out_i = -eps log sum_j exp(h_j - |x_i - y_j|^p / (p eps))."""
    bk = _resolve(backend, "softmin", x, y)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, h = _as_tensor(y, like=x), _as_tensor(h, like=x)
    return _run_or_bind(bk.bind_softmin(x, y, h, eps=eps, p=p))


# -- the one dispatch -------------------------------------------------------
_BINDING = contextvars.ContextVar("kpbench_losses_binding", default=False)

# what a loss's memory check asks the backend about: its largest primitive call (at the
# N x N / M x M size of the self terms), or the loss itself where it keeps prepared pairs
_PRIMITIVE_OF = {"mmd": "kernel_product", "energy": "kernel_product",
                 "sinkhorn_multiplicative": "kernel_product", "hausdorff": "hausdorff", "log_likelihood": "softmin", "sinkhorn": "sinkhorn"}


def memory_op(loss: str) -> str:
    """What a dense backend's memory_estimate is asked for loss ``loss`` (a LOSSES name)."""
    return _PRIMITIVE_OF[loss]


def bind(function, *args, **kwargs):
    """``function(*args, **kwargs)`` checked now, returned as a zero-argument callable
    that runs only the computation (backend lookup, conversions, validation and the
    memory check are done here, once). ``function``: a loss or primitive of this module.
    """
    token = _BINDING.set(True)
    try:
        return function(*args, **kwargs)
    finally:
        _BINDING.reset(token)


def _run_or_bind(call):
    return call if _BINDING.get() else call()


def _dispatch(name: str, bk: Backend, a, x, b, y, **params):
    """The backend's own implementation of loss ``name`` if it has one, else ours
    (after the memory check of its largest primitive call)."""
    implementation = bk.own_losses.get(name)
    if implementation is None and not bk.capabilities.primitives:
        raise UnsupportedCombination(f"{bk.name} has no {name} (and no primitives)")
    # the pre-flight of a dense backend (its own losses too: a dense peer at N=200000
    # tried to allocate 160-320 GB), with the op and sizes measure.dense_estimate asks
    size = max(x.shape[0], y.shape[0])
    bk.check_memory(memory_op(name), size, size, x.shape[1], x)
    implementation = implementation or _ON_PRIMITIVES[name]
    return _run_or_bind(functools.partial(implementation, bk, a, x, b, y, **params))


# -- kernel losses -----------------------------------------------------------
def mmd(a=None, x=None, b=None, y=None, *, kernel: str = "gaussian", blur: float = 0.1,
        backend: str | Backend = "torch"):
    """Kernel distance 1/2 |alpha - beta|_k^2 (kernel 'energy': the energy distance)."""
    kernel, blur = check_kernel(kernel), check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "mmd")
    _check_quadratic_terms(bk, a, x, b, y, kernel, blur)
    return _dispatch("mmd", bk, a, x, b, y, kernel=kernel, blur=blur)


def _check_quadratic_terms(bk, a, x, b, y, kernel, blur) -> None:
    """The kernel products of the MMD (:func:`check_kernel_range`) and its terms
    <a, K a>, <b, K b>, <a, K b>, each up to (m_a + m_b)^2 max|k| (|k| <= 1, the energy
    kernel's up to the diameter), refused where they overflow the dtype: weights of
    3e38 in float32 gave NaN (inf - inf); the MMD scales as the mass squared."""
    dtype = bk.computing_dtype(x)
    diameter = bk.kernel_range(x, y, kernel, blur)
    largest = (_mass(a) + _mass(b)) ** 2 * (diameter if kernel == "energy" else 1.0)
    if not largest <= float(dtype_info(dtype).max):
        raise KPBenchError(f"mmd's terms reach (m_a + m_b)^2 max|k| = {largest:.3g} (masses "
                           f"{_mass(a):.3g} and {_mass(b):.3g}) and overflow {dtype}: "
                           "normalise the weights (the MMD scales as the mass squared)")


def _mmd(bk, a, x, b, y, *, kernel, blur):
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
    p, blur = check_p(p), check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "hausdorff")
    return _dispatch("hausdorff", bk, a, x, b, y, p=p, blur=blur)


def _hausdorff(bk, a, x, b, y, *, p, blur):
    eps = blur**p
    diameter(x, y, blur, p)   # refuses coordinates whose costs overflow
    a_log, b_log = torch.log(a), torch.log(b)
    xy = bk.prepare_pair(x, y, p)   # one cost matrix (dense) for both cross terms
    xx, yy = bk.prepare_pair(x, x, p, reuse=xy), bk.prepare_pair(y, y, p, reuse=xy)
    f = xy.softmin(b_log, eps) - xx.softmin(a_log, eps)
    g = xy.softmin_t(a_log, eps) - yy.softmin(b_log, eps)
    return (a * f).sum() + (b * g).sum()


def log_likelihood(a=None, x=None, b=None, y=None, *, blur: float = 0.25,
                   backend: str | Backend = "torch"):
    """Negative log-likelihood of the samples (b, y) under the Gaussian kernel density
    of (a, x): -sum_j b_j log sum_i a_i exp(-|y_j - x_i|^2 / (2 blur^2)), in the log domain."""
    blur = check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "log_likelihood")
    return _dispatch("log_likelihood", bk, a, x, b, y, blur=blur)


def _log_likelihood(bk, a, x, b, y, *, blur):
    diameter(x, y, blur, 2)   # refuses scales the dtype cannot compute
    eps = blur**2
    return (b * bk.softmin(y, x, torch.log(a), eps=eps, p=2, validate=False)).sum() / eps


# -- Sinkhorn ----------------------------------------------------------------
def sinkhorn(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.05,
             scaling: float = 0.5, reach: float | None = None, debias: bool = True,
             backend: str | Backend = "torch", potentials: bool = False,
             iters: int | None = None, tol: float | None = None, max_iter: int | None = None,
             return_info: bool = False, schedule: str = "kpbench"):
    """Sinkhorn divergence S_eps (debias=True) or entropic OT_eps (debias=False), eps = blur**p.

    ``iters=None``: eps-scaling from the diameter of the clouds down to blur**p by the
    factor ``scaling``; ``iters=n``: exactly n iterations at eps = blur**p (kernel timing).
    ``tol``: then iterate at the final eps until the potentials move less than tol
    (at most ``max_iter`` iterations in all; None: the solver's default, 1000 here). ``reach``: unbalanced OT with KL marginal
    penalty rho = reach**p. ``potentials=True`` returns the dual potentials (f, g)
    (debiased: f_ba - f_aa, g_ab - g_bb) instead of the value.
    ``schedule``: "kpbench" (each eps of the annealing once) or "geomloss" (GeomLoss's
    list, whose first eps runs twice: GeomLoss's balanced p=2 values and gradients to
    round-off; what differs unbalanced or at p=1 is listed in
    :func:`kpbench.sinkhorn.epsilon_schedule`).
    ``return_info=True`` returns (result, info): "iterations", "eps_schedule",
    "marginal_err" (|pi 1 - a|_1 + |pi^T 1 - b|_1 of the cross potentials; unbalanced:
    the optimality residual) and "converged" (None without ``tol``; else whether the
    solve stopped by ``tol`` rather than ``max_iter``).
    The float64 reference (backend "numpy") always solves to its own tolerance
    (:mod:`kpbench.reference.sinkhorn`); ``scaling`` does not apply to it.
    """
    p, blur = check_p(p), check_blur(blur)
    reach = _check_reach(reach)
    iters, tol, max_iter = check_solver_options(iters=iters, tol=tol, max_iter=max_iter)
    scaling = check_number(scaling, "scaling")
    debias, potentials = check_flag(debias, "debias"), check_flag(potentials, "potentials")
    return_info = check_flag(return_info, "return_info")
    if schedule not in SCHEDULES:
        raise KPBenchError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "sinkhorn")
    _check_balanced(a, b, reach)
    return _dispatch("sinkhorn", bk, a, x, b, y, p=p, blur=blur, scaling=scaling, reach=reach,
                     debias=debias, potentials=potentials, iters=iters, tol=tol,
                     max_iter=max_iter, return_info=return_info, schedule=schedule)


def _sinkhorn(bk, a, x, b, y, *, p, blur, scaling, reach, debias, potentials, iters, tol,
              max_iter, return_info, schedule="kpbench"):
    radius = diameter(x, y, blur, p, reach)   # refuses scales the dtype cannot compute
    eps_list = (epsilon_schedule(radius, blur, p, scaling, schedule) if iters is None
                else fixed_schedule(blur, p, iters))
    eps = eps_list[-1]
    solver = SinkhornSolver(bk, a, x, b, y, p=p, reach=reach, debias=debias)
    state, iterations, converged = solver.solve(eps_list, tol,
                                                MAX_ITER if max_iter is None else max_iter)
    final = solver.extrapolate(state, eps)
    if potentials:
        f_ba, g_ab, f_aa, g_bb = final
        result = (f_ba - f_aa, g_ab - g_bb) if debias else (f_ba, g_ab)
    else:
        result = solver.value(final, eps)
    if not return_info:
        return result
    info = {"iterations": iterations, "eps_schedule": eps_list, "converged": converged,
            "marginal_err": solver.marginal_error(state, final, eps)}
    return result, info


def sinkhorn_multiplicative(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.15,
                            iters: int = 1000, debias: bool = True,
                            backend: str | Backend = "torch"):
    """The classic Sinkhorn u = a / K v, v = b / K^T u with K = exp(-C/eps), eps = blur**p,
    differentiated by backpropagation through the loop.

    It underflows (K v = 0, then inf / NaN) as soon as exp(-C/eps) does, e.g. at
    blur = .15 in float32 for points more than ~2 apart: the result is then NaN, on
    purpose. Use :func:`sinkhorn` (log domain) for a stable computation.
    """
    p, blur = check_p(p), check_blur(blur)
    iters, debias = check_whole(iters, "iters"), check_flag(debias, "debias")
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "sinkhorn_multiplicative")
    _check_balanced(a, b, None)
    bk.kernel_range(x, y, "gaussian" if p == 2 else "laplacian", blur)
    return _dispatch("sinkhorn_multiplicative", bk, a, x, b, y, p=p, blur=blur,
                     iters=iters, debias=debias)


def _sinkhorn_multiplicative(bk, a, x, b, y, *, p, blur, iters, debias):
    kernel = "gaussian" if p == 2 else "laplacian"  # exp(-C/eps) for C = |x-y|^p / p
    eps = blur**p

    def kp(u, v, w):
        return bk.kernel_product(u, v, w, kernel=kernel, blur=blur, validate=False)

    def ot(a, x, b, y):
        v = torch.ones_like(b)
        for _ in range(iters):
            u = a / kp(x, y, v)
            v = b / kp(y, x, u)
        return eps * ((a * torch.log(u / a)).sum() + (b * torch.log(v / b)).sum())

    if not debias:
        return ot(a, x, b, y)
    return ot(a, x, b, y) - 0.5 * ot(a, x, a, x) - 0.5 * ot(b, y, b, y)


_ON_PRIMITIVES = {
    "mmd": _mmd,
    "hausdorff": _hausdorff,
    "log_likelihood": _log_likelihood,
    "sinkhorn": _sinkhorn,
    "sinkhorn_multiplicative": _sinkhorn_multiplicative,
}


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


__all__ = ["bind", "kernel_product", "softmin", "mmd", "energy_distance", "hausdorff", "log_likelihood",
           "sinkhorn", "sinkhorn_multiplicative", "make_loss", "LOSSES"]
