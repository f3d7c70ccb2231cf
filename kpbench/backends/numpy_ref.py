"""The float64 NumPy reference: the judge of every other backend.

Independent code path: direct coordinate differences (no |x|^2 + |y|^2 - 2<x,y>
expansion), rows processed in chunks so that memory stays O(chunk * M * D), and
its own float64 implementations of the losses (MMD, Hausdorff, log-likelihood,
log-domain Sinkhorn, multiplicative Sinkhorn). It shares only the epsilon
schedule with :mod:`kpbench.losses` (a specification, not a computation).

Inputs may be NumPy arrays or torch tensors; everything is computed in float64
and returned as NumPy arrays / Python floats. No autograd.
"""
from __future__ import annotations

import numpy as np

from .base import Backend, Capabilities
from .schedule import damping, epsilon_schedule, fixed_schedule

CHUNK_BYTES = 64 * 2**20  # per chunk of the (rows, M, D) difference array


def as_float64(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor, without importing torch here
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _row_chunks(N: int, M: int, D: int):
    rows = max(1, CHUNK_BYTES // (8 * M * max(D, 1)))
    for start in range(0, N, rows):
        yield slice(start, min(N, start + rows))


def _distances(xc: np.ndarray, y: np.ndarray, squared: bool) -> np.ndarray:
    diff = xc[:, None, :] - y[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    return d2 if squared else np.sqrt(d2)


def _kernel_matrix(xc, y, kernel: str, blur: float) -> np.ndarray:
    if kernel == "gaussian":
        return np.exp(-_distances(xc, y, squared=True) / (2 * blur**2))
    if kernel == "laplacian":
        return np.exp(-_distances(xc, y, squared=False) / blur)
    return -_distances(xc, y, squared=False)  # energy


def _cost_matrix(xc, y, p: int) -> np.ndarray:
    return _distances(xc, y, squared=True) / 2 if p == 2 else _distances(xc, y, squared=False)


def np_kernel_product(x, y, b, kernel: str, blur: float) -> np.ndarray:
    x, y, b = as_float64(x), as_float64(y), as_float64(b)
    out = np.empty((x.shape[0],) + b.shape[1:])
    for rows in _row_chunks(x.shape[0], y.shape[0], x.shape[1]):
        out[rows] = _kernel_matrix(x[rows], y, kernel, blur) @ b
    return out


def np_softmin(x, y, h, eps: float, p: int) -> np.ndarray:
    """-eps log sum_j exp(h_j - C_ij/eps), max-shifted per row."""
    x, y, h = as_float64(x), as_float64(y), as_float64(h)
    out = np.empty(x.shape[0])
    for rows in _row_chunks(x.shape[0], y.shape[0], x.shape[1]):
        s = h[None, :] - _cost_matrix(x[rows], y, p) / eps
        m = s.max(axis=1)
        out[rows] = -eps * (m + np.log(np.exp(s - m[:, None]).sum(axis=1)))
    return out


def _diameter(x, y) -> float:
    points = np.concatenate([x, y])
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def _log(w: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(w)


def np_sinkhorn(a, x, b, y, *, p: int, blur: float, scaling: float, reach, debias: bool,
                iters=None, tol=None, max_iter: int = 1000):
    """Log-domain Sinkhorn (symmetric updates, eps-scaling), float64.

    Returns (value, f, g, info) with f, g the (debiased) dual potentials and
    info = {"iterations": ..., "eps_schedule": [...]}.
    """
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    a_log, b_log = _log(a), _log(b)
    if iters is None:
        schedule = epsilon_schedule(_diameter(x, y), blur, p, scaling)
    else:
        schedule = fixed_schedule(blur, p, iters)

    def update(eps, f_ba, g_ab, f_aa, g_bb):
        lam = damping(eps, reach, p)
        new = (lam * np_softmin(x, y, b_log + g_ab / eps, eps, p),
               lam * np_softmin(y, x, a_log + f_ba / eps, eps, p))
        if debias:
            new += (lam * np_softmin(x, x, a_log + f_aa / eps, eps, p),
                    lam * np_softmin(y, y, b_log + g_bb / eps, eps, p))
        else:
            new += (f_aa, g_bb)
        return new

    def alternate(eps, f_ba, g_ab, f_aa, g_bb):
        # at fixed eps: Gauss-Seidel on the cross potentials, averaging on the symmetric ones
        lam = damping(eps, reach, p)
        f_new = lam * np_softmin(x, y, b_log + g_ab / eps, eps, p)
        g_new = lam * np_softmin(y, x, a_log + f_new / eps, eps, p)
        _, _, f_self, g_self = update(eps, f_ba, g_ab, f_aa, g_bb)
        return (f_new, g_new) + _average((f_aa, g_bb), (f_self, g_self))

    eps0, lam0 = schedule[0], damping(schedule[0], reach, p)
    f_ba = lam0 * np_softmin(x, y, b_log, eps0, p)
    g_ab = lam0 * np_softmin(y, x, a_log, eps0, p)
    f_aa = lam0 * np_softmin(x, x, a_log, eps0, p) if debias else None
    g_bb = lam0 * np_softmin(y, y, b_log, eps0, p) if debias else None
    state = (f_ba, g_ab, f_aa, g_bb)
    iterations = 0
    for eps in schedule:
        state = _average(state, update(eps, *state))
        iterations += 1
    eps = schedule[-1]
    if tol is not None:
        while iterations < max_iter:
            new = alternate(eps, *state)
            change = np.abs(new[0] - state[0]).max()
            state, iterations = new, iterations + 1
            if change < tol:
                break
    # the last extrapolation, as the torch path does for its envelope-theorem step
    f_ba, g_ab, f_aa, g_bb = update(eps, *state)
    value = _dual_value(a, b, f_ba, g_ab, f_aa, g_bb, eps=eps, reach=reach, p=p, debias=debias)
    f = f_ba - f_aa if debias else f_ba
    g = g_ab - g_bb if debias else g_ab
    return value, f, g, {"iterations": iterations, "eps_schedule": schedule}


def _average(old, new):
    return tuple(None if o is None else 0.5 * (o + n) for o, n in zip(old, new))


def _dual_value(a, b, f_ba, g_ab, f_aa, g_bb, *, eps, reach, p, debias) -> float:
    if reach is None:
        if debias:
            return float(a @ (f_ba - f_aa) + b @ (g_ab - g_bb))
        return float(a @ f_ba + b @ g_ab)
    rho = reach**p
    weight = rho + eps / 2
    if debias:
        return float(weight * (a @ (np.exp(-f_aa / rho) - np.exp(-f_ba / rho))
                               + b @ (np.exp(-g_bb / rho) - np.exp(-g_ab / rho))))
    return float(weight * (a @ (1 - np.exp(-f_ba / rho)) + b @ (1 - np.exp(-g_ab / rho))))


def np_mmd(a, x, b, y, *, kernel: str, blur: float) -> float:
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    kxx = a @ np_kernel_product(x, x, a, kernel, blur)
    kyy = b @ np_kernel_product(y, y, b, kernel, blur)
    kxy = a @ np_kernel_product(x, y, b, kernel, blur)
    return float(0.5 * (kxx + kyy - 2 * kxy))


def np_hausdorff(a, x, b, y, *, p: int, blur: float) -> float:
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    eps = blur**p
    a_log, b_log = _log(a), _log(b)
    f = np_softmin(x, y, b_log, eps, p) - np_softmin(x, x, a_log, eps, p)
    g = np_softmin(y, x, a_log, eps, p) - np_softmin(y, y, b_log, eps, p)
    return float(a @ f + b @ g)


def np_log_likelihood(a, x, b, y, *, blur: float) -> float:
    """-sum_j b_j log sum_i a_i k(y_j, x_i), k the (unnormalised) Gaussian kernel of width blur."""
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    eps = blur**2
    return float(b @ np_softmin(y, x, _log(a), eps, 2) / eps)


def np_sinkhorn_multiplicative(a, x, b, y, *, p: int, blur: float, iters: int,
                               debias: bool = True) -> float:
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    kernel = "gaussian" if p == 2 else "laplacian"
    eps = blur**p

    def ot(a, x, b, y):
        v = np.ones_like(b)
        with np.errstate(all="ignore"):
            for _ in range(iters):
                u = a / np_kernel_product(x, y, v, kernel, blur)
                v = b / np_kernel_product(y, x, u, kernel, blur)
            return float(eps * (a @ np.log(u / a) + b @ np.log(v / b)))

    if not debias:
        return ot(a, x, b, y)
    return ot(a, x, b, y) - 0.5 * ot(a, x, a, x) - 0.5 * ot(b, y, b, y)


class NumpyBackend(Backend):
    name = "numpy"
    array_module = "numpy"
    capabilities = Capabilities(autograd=False, cuda=False, float32=False, float64=True,
                                dense=False)

    def _kernel_product(self, x, y, b, *, kernel, blur):
        return np_kernel_product(x, y, b, kernel, blur)

    def _softmin(self, x, y, h, *, eps, p):
        return np_softmin(x, y, h, eps, p)
