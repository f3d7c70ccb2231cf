"""Losses between weighted point clouds, written once on the two backend primitives.

Calling convention (close to GeomLoss): weights first, then positions; ``a=None`` or
``b=None`` means uniform weights; ``backend`` by name or object.

* torch-based backends (torch, keops, cuda): inputs are torch tensors (NumPy arrays
  are converted), the result is a 0-dim tensor, differentiable w.r.t. x, y, a, b.
* a backend with losses of its own (``Backend.own_losses``: the float64 reference
  :mod:`kpbench.reference`, a peer library) gets the validated inputs and returns
  what it computes (the reference: a Python float).

Binding, explicitly: ``bind_kernel_product``, ``bind_softmin``, ``bind_sinkhorn`` and
``bind_loss(name, ...)`` validate the parameters and inputs once, resolve the backend (a
Backend object is used as is) and, with ``preflight=True``, check a dense backend's
memory; they return a zero-argument callable that runs the computation alone (what a
benchmark times). The public losses are ``bind_...(...)()``. :func:`_bound` is the one
place that picks the backend's own implementation or the one written here on the
primitives. Sinkhorn's solver is :mod:`kpbench.sinkhorn`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from . import sinkhorn as _solver
from .backends import Backend, get_backend
from .backends.base import (check_blur, check_flag, check_kernel, check_p, check_pair,
                            check_signal, check_whole, dtype_info)
from .backends.losses_table import memory_op
from .backends.sinkhorn_types import SinkhornOptions, SinkhornResult
from .errors import KPBenchError, UnsupportedCombination
from .sinkhorn import diameter

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
    """The backend object (one given is used as is: its caller looked it up); "auto" picks
    the fastest for this problem from the machine's calibration (:mod:`kpbench.backends.auto`,
    which logs and keeps its choice)."""
    if isinstance(backend, Backend):
        return backend
    if backend != "auto":
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


# -- the primitives, with conversion and validation --------------------------
def bind_kernel_product(x, y, b, *, kernel: str = "gaussian", blur: float = 0.1,
                        backend: str | Backend = "torch", preflight: bool = True):
    """out_i = sum_j k(x_i, y_j) b_j, checked now, as a zero-argument callable."""
    bk = _resolve(backend, "kernel_product", x, y)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, b = _as_tensor(y, like=x), _as_tensor(b, like=x)
    return bk.bind_kernel_product(x, y, b, kernel=kernel, blur=blur, preflight=preflight)


def kernel_product(x, y, b, *, kernel: str = "gaussian", blur: float = 0.1,
                   backend: str | Backend = "torch"):
    """out_i = sum_j k(x_i, y_j) b_j."""
    return bind_kernel_product(x, y, b, kernel=kernel, blur=blur, backend=backend)()


def bind_softmin(x, y, h, *, eps: float, p: int = 2, backend: str | Backend = "torch",
                 preflight: bool = True):
    """out_i = -eps log sum_j exp(h_j - |x_i - y_j|^p / (p eps)), checked now, as a callable."""
    bk = _resolve(backend, "softmin", x, y)
    if bk.array_module == "torch":
        x = _as_tensor(x)
        y, h = _as_tensor(y, like=x), _as_tensor(h, like=x)
    return bk.bind_softmin(x, y, h, eps=eps, p=p, preflight=preflight)


def softmin(x, y, h, *, eps: float, p: int = 2, backend: str | Backend = "torch"):
    """out_i = -eps log sum_j exp(h_j - |x_i - y_j|^p / (p eps))."""
    return bind_softmin(x, y, h, eps=eps, p=p, backend=backend)()


# -- the one dispatch -------------------------------------------------------
def _bound(name: str, bk: Backend, a, x, b, y, preflight: bool, **params):
    """The backend's own implementation of loss ``name`` if it has one, else ours, bound
    to the validated inputs (after the memory check of its largest call: ``preflight``)."""
    implementation = bk.own_losses.get(name)
    if implementation is None and not bk.capabilities.primitives:
        raise UnsupportedCombination(f"{bk.name} has no {name} (and no primitives)")
    if preflight:
        # a dense backend's check (its own losses too: a dense peer at N=200000 tried to
        # allocate 160-320 GB), with the op and sizes the sweep's pre-flight asks
        size = max(x.shape[0], y.shape[0])
        bk.check_memory(memory_op(name), size, size, x.shape[1], x)
    implementation = implementation or _ON_PRIMITIVES[name]
    return functools.partial(implementation, bk, a, x, b, y, **params)


# -- kernel losses -----------------------------------------------------------
def mmd(a=None, x=None, b=None, y=None, *, kernel: str = "gaussian", blur: float = 0.1,
        backend: str | Backend = "torch"):
    """Kernel distance 1/2 |alpha - beta|_k^2 (kernel 'energy': the energy distance)."""
    return bind_loss("mmd", a, x, b, y, kernel=kernel, blur=blur, backend=backend)()


def _bind_mmd(a, x, b, y, *, kernel="gaussian", blur=0.1, backend="torch", preflight=True):
    kernel, blur = check_kernel(kernel), check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "mmd")
    _check_quadratic_terms(bk, a, x, b, y, kernel, blur)
    return _bound("mmd", bk, a, x, b, y, preflight, kernel=kernel, blur=blur)


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
    return bind_loss("energy", a, x, b, y, backend=backend)()


def _bind_energy(a, x, b, y, *, backend="torch", preflight=True):
    return _bind_mmd(a, x, b, y, kernel="energy", blur=1.0, backend=backend, preflight=preflight)


def hausdorff(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.1,
              backend: str | Backend = "torch"):
    """Debiased soft Hausdorff divergence built on the softmin (eps = blur**p):
    <a, softmin_beta(x) - softmin_alpha(x)> + <b, softmin_alpha(y) - softmin_beta(y)>."""
    return bind_loss("hausdorff", a, x, b, y, p=p, blur=blur, backend=backend)()


def _bind_hausdorff(a, x, b, y, *, p=2, blur=0.1, backend="torch", preflight=True):
    p, blur = check_p(p), check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "hausdorff")
    return _bound("hausdorff", bk, a, x, b, y, preflight, p=p, blur=blur)


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
    return bind_loss("log_likelihood", a, x, b, y, blur=blur, backend=backend)()


def _bind_log_likelihood(a, x, b, y, *, blur=0.25, backend="torch", preflight=True):
    blur = check_blur(blur)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "log_likelihood")
    return _bound("log_likelihood", bk, a, x, b, y, preflight, blur=blur)


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
    ``return_info=True`` returns (result, :class:`~kpbench.backends.sinkhorn_types.SinkhornResult`):
    its ``iterations``, ``eps_schedule``, ``marginal_err`` (|pi 1 - a|_1 + |pi^T 1 - b|_1
    of the cross potentials; unbalanced: the optimality residual) and ``converged`` (None
    without ``tol``; else whether the solve stopped by ``tol`` rather than ``max_iter``).
    The float64 reference (backend "numpy") always solves to its own tolerance
    (:mod:`kpbench.reference.sinkhorn`); ``scaling`` does not apply to it.
    """
    options = SinkhornOptions(p=p, blur=blur, scaling=scaling, reach=reach, debias=debias,
                              potentials=potentials, iters=iters, tol=tol, max_iter=max_iter,
                              schedule=schedule)
    return_info = check_flag(return_info, "return_info")
    result = bind_sinkhorn(a, x, b, y, options=options, backend=backend)()
    return (result.output(options), result) if return_info else result.output(options)


def bind_sinkhorn(a=None, x=None, b=None, y=None, *, options: SinkhornOptions | None = None,
                  backend: str | Backend = "torch", preflight: bool = True, **keywords):
    """:func:`sinkhorn` checked now, as a zero-argument callable returning its
    :class:`SinkhornResult`; the options as a :class:`SinkhornOptions` or as the keywords
    of :func:`sinkhorn` (not both)."""
    if options is not None and keywords:
        raise KPBenchError(f"give the Sinkhorn options as options= or as keywords, not both "
                           f"(got {', '.join(keywords)})")
    options = options if options is not None else SinkhornOptions(**keywords)
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "sinkhorn")
    _check_balanced(a, b, options.reach)
    return _bound("sinkhorn", bk, a, x, b, y, preflight, options=options)


def _bind_sinkhorn_value(a, x, b, y, *, backend="torch", preflight=True, **keywords):
    options = SinkhornOptions(**keywords)
    solve = bind_sinkhorn(a, x, b, y, options=options, backend=backend, preflight=preflight)
    return lambda: solve().output(options)


def _sinkhorn(bk, a, x, b, y, *, options: SinkhornOptions) -> SinkhornResult:
    return _solver.solve(bk, a, x, b, y, options)


def sinkhorn_multiplicative(a=None, x=None, b=None, y=None, *, p: int = 2, blur: float = 0.15,
                            iters: int = 1000, debias: bool = True,
                            backend: str | Backend = "torch"):
    """The classic Sinkhorn u = a / K v, v = b / K^T u with K = exp(-C/eps), eps = blur**p,
    differentiated by backpropagation through the loop.

    It underflows (K v = 0, then inf / NaN) as soon as exp(-C/eps) does, e.g. at
    blur = .15 in float32 for points more than ~2 apart: the result is then NaN, on
    purpose. Use :func:`sinkhorn` (log domain) for a stable computation.
    """
    return bind_loss("sinkhorn_multiplicative", a, x, b, y, p=p, blur=blur, iters=iters,
                     debias=debias, backend=backend)()


def _bind_sinkhorn_multiplicative(a, x, b, y, *, p=2, blur=0.15, iters=1000, debias=True,
                                  backend="torch", preflight=True):
    p, blur = check_p(p), check_blur(blur)
    iters, debias = check_whole(iters, "iters"), check_flag(debias, "debias")
    bk, a, x, b, y = _prepare(a, x, b, y, backend, "sinkhorn_multiplicative")
    _check_balanced(a, b, None)
    bk.kernel_range(x, y, "gaussian" if p == 2 else "laplacian", blur)
    return _bound("sinkhorn_multiplicative", bk, a, x, b, y, preflight, p=p, blur=blur,
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
_BINDERS = {
    "mmd": _bind_mmd,
    "energy": _bind_energy,
    "hausdorff": _bind_hausdorff,
    "log_likelihood": _bind_log_likelihood,
    "sinkhorn": _bind_sinkhorn_value,
    "sinkhorn_multiplicative": _bind_sinkhorn_multiplicative,
}


def _known(name: str) -> str:
    if name not in LOSSES:
        raise KPBenchError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return name


def bind_loss(name: str, a=None, x=None, b=None, y=None, *, backend: str | Backend = "torch",
              preflight: bool = True, **params):
    """Loss ``name`` (a LOSSES name) with ``params``, checked now, as a zero-argument
    callable returning its value (``preflight=False``: the caller made the memory check)."""
    return _BINDERS[_known(name)](a, x, b, y, backend=backend, preflight=preflight, **params)


def make_loss(name: str, **params):
    """The loss ``name`` with its parameters bound: ``loss(a, x, b, y, backend=...)``."""
    return functools.partial(LOSSES[_known(name)], **params)


__all__ = ["bind_kernel_product", "bind_softmin", "bind_sinkhorn", "bind_loss", "kernel_product",
           "softmin", "mmd", "energy_distance", "hausdorff", "log_likelihood", "sinkhorn",
           "sinkhorn_multiplicative", "make_loss", "LOSSES", "SinkhornOptions", "SinkhornResult"]
