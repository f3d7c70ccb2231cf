"""The reference's kernel losses in float64, written on its own primitives."""
from __future__ import annotations

import numpy as np

from .primitives import as_float64, log_weights, np_kernel_product, np_softmin


def np_mmd(a, x, b, y, *, kernel: str, blur: float) -> float:
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    kxx = a @ np_kernel_product(x, x, a, kernel, blur)
    kyy = b @ np_kernel_product(y, y, b, kernel, blur)
    kxy = a @ np_kernel_product(x, y, b, kernel, blur)
    return float(0.5 * (kxx + kyy - 2 * kxy))


def np_hausdorff(a, x, b, y, *, p: int, blur: float) -> float:
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    eps = blur**p
    a_log, b_log = log_weights(a), log_weights(b)
    f = np_softmin(x, y, b_log, eps, p) - np_softmin(x, x, a_log, eps, p)
    g = np_softmin(y, x, a_log, eps, p) - np_softmin(y, y, b_log, eps, p)
    return float(a @ f + b @ g)


def np_log_likelihood(a, x, b, y, *, blur: float) -> float:
    """-sum_j b_j log sum_i a_i k(y_j, x_i), k the (unnormalised) Gaussian kernel of width blur."""
    a, x, b, y = as_float64(a), as_float64(x), as_float64(b), as_float64(y)
    eps = blur**2
    return float(b @ np_softmin(y, x, log_weights(a), eps, 2) / eps)


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
