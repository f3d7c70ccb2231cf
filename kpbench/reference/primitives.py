"""The reference's two primitives in float64: direct coordinate differences (no
|x|^2 + |y|^2 - 2<x,y> expansion), rows processed in chunks so that memory stays
O(chunk * M * D).

Inputs may be NumPy arrays or torch tensors; everything is computed in float64
and returned as NumPy arrays. No autograd.
"""
from __future__ import annotations

import numpy as np


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


def cost_matrix(x, y, p: int) -> np.ndarray:
    """The full (N, M) cost |x_i - y_j|^p / p in float64, built chunk by chunk."""
    x, y = as_float64(x), as_float64(y)
    out = np.empty((x.shape[0], y.shape[0]))
    for rows in _row_chunks(x.shape[0], y.shape[0], x.shape[1]):
        out[rows] = _cost_matrix(x[rows], y, p)
    return out


def log_weights(w: np.ndarray) -> np.ndarray:
    """log w, with log 0 = -inf (a zero weight) and no warning."""
    with np.errstate(divide="ignore"):
        return np.log(w)


def _unit_differences(diff: np.ndarray) -> np.ndarray:
    """(x_i - y_j) / |x_i - y_j|, 0 where the points coincide (the subgradient 0)."""
    norm = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, diff / norm, 0.0)


def np_kernel_product_grad(x, y, b, c, kernel: str, blur: float) -> np.ndarray:
    """d/dx of sum_i c_i sum_j k(x_i, y_j) b_j, in closed form (b of shape (M,))."""
    x, y, b, c = as_float64(x), as_float64(y), as_float64(b), as_float64(c)
    out = np.empty_like(x)
    for rows in _row_chunks(x.shape[0], y.shape[0], x.shape[1]):
        diff = x[rows, None, :] - y[None, :, :]
        if kernel == "gaussian":
            dk = -_kernel_matrix(x[rows], y, kernel, blur)[..., None] * diff / blur**2
        elif kernel == "laplacian":
            dk = -_kernel_matrix(x[rows], y, kernel, blur)[..., None] * _unit_differences(diff) / blur
        else:   # energy: k = -|x - y|
            dk = -_unit_differences(diff)
        out[rows] = c[rows, None] * np.einsum("ijk,j->ik", dk, b)
    return out


def cost_gradient(x, y, p: int) -> np.ndarray:
    """(N, M, D) array of d/dx_i C(x_i, y_j): x_i - y_j (p = 2) or its unit vector (p = 1)."""
    diff = as_float64(x)[:, None, :] - as_float64(y)[None, :, :]
    return diff if p == 2 else _unit_differences(diff)
