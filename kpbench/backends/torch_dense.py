"""Dense PyTorch backend: N x M matrices, CPU or CUDA, float32/float64, autograd.

Distances do not depend on where the clouds sit. Squared distances (gaussian kernel,
p = 2) use the |x|^2 + |y|^2 - 2<x, y> expansion (one matmul, one N x M buffer) on both
clouds centred on one common point: expanded at the raw coordinates it cancels
catastrophically in float32 away from the origin (Sinkhorn 30 % off at offset 500).
Distances themselves (laplacian and energy kernels, p = 1) come from the differences
(``torch.cdist`` without matmul): the square root of an expanded square turns its
rounding near 0 into errors of sqrt(ulp) (C(x_i, x_i) = 6.9e-4 in float32 instead of 0).
Dense means O(NM) memory: every call first compares an estimate of its
peak memory with a budget and refuses (MemoryBudgetExceeded) rather than exhaust
the machine.

A :class:`DensePair` (``prepare_pair``) builds the cost matrix once and, where no
gradient flows, runs each softmin in one reused scratch matrix: h - C/eps in one
pass, then max, shift and exp in place (allocating a fresh N x M temporary costs more
than the arithmetic: page faults). softmin(y, x) reads the same matrix by columns.
"""
from __future__ import annotations

import math

import torch

from .base import Backend, Capabilities, Pair, check_p
from .losses_table import CALLS_KEPT_FOR_BACKWARD

# N x M buffers alive at the peak of one call (distances, kernel/exponent, result of
# the reduction's temporaries); with autograd, the saved tensors and the backward's own
# temporaries: peak RSS growth of up to 196 MB (~12 buffers) measured for the float32
# kernel product with gradient at N = M = 2000, hence a factor 4.5 (13.5 buffers).
DENSE_BUFFERS = {"kernel_product": 3, "softmin": 3}
GRAD_FACTOR = 4.5
# Losses on prepared pairs keep their cost matrices (xy, xx, yy) and one shared scratch
# matrix for a whole solve, plus one primitive call at a time (four kept for a backward).
PAIR_BUFFERS = {"sinkhorn": 4, "hausdorff": 4}
# N x K buffers of a kernel product with K columns: its output (and, with autograd, the
# output's gradient); peak RSS growth measured 100 MB (200 MB with backward) at N = M = 100,
# K = 250000, float32 -- where the N x M count alone estimated 120 KB
OUTPUT_BUFFERS = {False: 1, True: 2}
CPU_BUDGET_FRACTION = 0.5   # of MemAvailable; two Ray workers may share one machine
CUDA_BUDGET_FRACTION = 0.9  # of the device's free memory


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = centred(x, y)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return d2.clamp_min(0)


def centred(x: torch.Tensor, y: torch.Tensor):
    """x and y shifted by the midpoint of their common bounding box: the expansion's rounding
    then scales with the clouds' extent, not with their distance to the origin, and no
    point is farther than half the box's diagonal from it (no term of the expansion beyond
    diameter^2: what :func:`kpbench.backends.base.check_distances` checks). low + (high -
    low) / 2 overflows for no coordinates whose differences are finite (a mean of float32
    coordinates near 1e37 does). The point is detached (any point gives the same
    distances), so d(x - c)/dx = I and gradients stay exact."""
    with torch.no_grad():
        low = torch.minimum(x.min(0).values, y.min(0).values)
        c = low + (torch.maximum(x.max(0).values, y.max(0).values) - low) / 2
    return x - c, y - c


def distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j| from the differences: exactly 0 where x_i == y_j (the same tensor or
    equal rows), with a gradient of 0 there, not NaN (cdist's backward divides by the
    distance only where it is positive). That backward has no derivative of its own: no
    second derivatives through these distances."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def dense_kernel(x, y, kernel: str, blur: float) -> torch.Tensor:
    if kernel == "gaussian":
        return torch.exp(squared_distances(x, y) / (-2 * blur**2))
    if kernel == "laplacian":
        return torch.exp(distances(x, y) / -blur)
    return -distances(x, y)  # energy


def dense_cost(x, y, p: int) -> torch.Tensor:
    return squared_distances(x, y) / 2 if p == 2 else distances(x, y)


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


class TorchBackend(Backend):
    name = "torch"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=True)

    def prepare_pair(self, x, y, p, reuse=None):
        scratch = reuse.scratch if isinstance(reuse, DensePair) else Scratch()
        return DensePair(self, x, y, check_p(p), scratch)

    def _kernel_product(self, x, y, b, *, kernel, blur):
        return dense_kernel(x, y, kernel, blur) @ b

    def _softmin(self, x, y, h, *, eps, p):
        return -eps * torch.logsumexp(h[None, :] - dense_cost(x, y, p) / eps, dim=1)

    def memory_estimate(self, op, N, M, D, itemsize, grad=False, columns=1):
        op, grad = op.removesuffix("_grad"), grad or op.endswith("_grad")
        if op == "kernel_product" and columns > 1:   # b of shape (M, K): out is (N, K)
            return (self.memory_estimate(op, N, M, D, itemsize, grad)
                    + OUTPUT_BUFFERS[grad] * N * columns * itemsize)
        if op in PAIR_BUFFERS:   # N = M = the larger cloud (the self problems)
            calls = CALLS_KEPT_FOR_BACKWARD if grad else 1
            per_call = self.memory_estimate("softmin", N, M, D, itemsize, grad)
            return int(PAIR_BUFFERS[op] * N * M * itemsize + calls * per_call)
        buffers = DENSE_BUFFERS.get(op, 3)
        if grad:
            buffers *= GRAD_FACTOR
        return int(buffers * N * M * itemsize)

    def memory_budget(self, device):
        if device.startswith("cuda"):
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return int(CUDA_BUDGET_FRACTION * free)
        return int(CPU_BUDGET_FRACTION * available_memory_bytes())


class Scratch:
    """One flat buffer, grown on demand, lent to the softmins of one solve in turn."""

    def __init__(self):
        self.buffer = None

    def matrix(self, n: int, m: int, like: torch.Tensor) -> torch.Tensor:
        b = self.buffer
        if b is None or b.numel() < n * m or b.dtype != like.dtype or b.device != like.device:
            b = self.buffer = torch.empty(n * m, dtype=like.dtype, device=like.device)
        return b[: n * m].view(n, m)


def _logsumexp_inplace(s: torch.Tensor, dim: int) -> torch.Tensor:
    """log sum exp of s along ``dim``, overwriting s (max-shifted: nothing overflows).

    The shifted exponents are clamped at log(smallest normal) + 5 before exp: torch's CPU
    exp is ~10x slower on inputs whose result is subnormal or 0 (measured 18 ms vs 1.7 ms
    for 1e6 float32 values in [-600, 0]), and each clamped term adds < 2e-36 (float32) to
    a sum >= 1 (the max term), far below round-off for any M < 1e20.
    """
    m = s.amax(dim, keepdim=True)
    m.masked_fill_(~torch.isfinite(m), 0.0)   # a row of -inf (zero weights) stays -inf
    s.sub_(m).clamp_(min=math.log(torch.finfo(s.dtype).tiny) + 5).exp_()
    return s.sum(dim).log_().add_(m.squeeze(dim))


class DensePair(Pair):
    """The cost matrix C (N, M) of x and y, built once (see the module docstring).

    Without autograd (or with gradients w.r.t. h only) both directions read the cached C;
    when a gradient must flow into x or y, a differentiable C is built once and kept.
    """

    def __init__(self, bk, x, y, p, scratch: Scratch):
        super().__init__(bk, x, y, p)
        self.scratch = scratch
        self._cost = self._graph_cost = None

    def _needs_graph(self) -> bool:
        return torch.is_grad_enabled() and (self.x.requires_grad or self.y.requires_grad)

    def cost(self) -> torch.Tensor:
        if self._needs_graph():
            if self._graph_cost is None:
                self._graph_cost = dense_cost(self.x, self.y, self.p)
            return self._graph_cost
        if self._cost is None:
            with torch.no_grad():
                self._cost = dense_cost(self.x, self.y, self.p)
        return self._cost

    def _reduce(self, h, eps, dim):
        c = self.cost()
        h = h[None, :] if dim == 1 else h[:, None]
        if torch.is_grad_enabled() and (c.requires_grad or h.requires_grad):
            return -eps * torch.logsumexp(h - c / eps, dim=dim)
        s = torch.add(h, c, alpha=-1.0 / eps, out=self.scratch.matrix(*c.shape, like=c))
        return _logsumexp_inplace(s, dim).mul_(-eps)

    def softmin(self, h, eps):
        return self._reduce(h, eps, dim=1)

    def softmin_t(self, h, eps):
        return self._reduce(h, eps, dim=0)
