"""Dense PyTorch backend: N x M matrices, CPU or CUDA, float32/float64, autograd.

Squared distances use the |x|^2 + |y|^2 - 2<x, y> expansion (one matmul, one N x M
buffer). Dense means O(NM) memory: every call first compares an estimate of its
peak memory with a budget and refuses (MemoryBudgetExceeded) rather than exhaust
the machine.
"""
from __future__ import annotations

import torch

from .base import Backend, Capabilities

# N x M buffers alive at the peak of one call (distances, kernel/exponent, result of
# the reduction's temporaries); with autograd, the saved tensors and the backward's own
# temporaries: peak RSS growth of up to 196 MB (~12 buffers) measured for the float32
# kernel product with gradient at N = M = 2000, hence a factor 4.5 (13.5 buffers).
DENSE_BUFFERS = {"kernel_product": 3, "softmin": 3}
GRAD_FACTOR = 4.5
CPU_BUDGET_FRACTION = 0.5   # of MemAvailable; two Ray workers may share one machine
CUDA_BUDGET_FRACTION = 0.9  # of the device's free memory


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return d2.clamp_min(0)


def safe_sqrt(d2: torch.Tensor) -> torch.Tensor:
    """sqrt whose gradient is 0 (not NaN) at 0: the energy kernel and the p=1 cost at x = y."""
    positive = d2 > 0
    return torch.where(positive, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), 0.0)


def dense_kernel(x, y, kernel: str, blur: float) -> torch.Tensor:
    d2 = squared_distances(x, y)
    if kernel == "gaussian":
        return torch.exp(d2 / (-2 * blur**2))
    if kernel == "laplacian":
        return torch.exp(safe_sqrt(d2) / -blur)
    return -safe_sqrt(d2)  # energy


def dense_cost(x, y, p: int) -> torch.Tensor:
    d2 = squared_distances(x, y)
    return d2 / 2 if p == 2 else safe_sqrt(d2)


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

    def _kernel_product(self, x, y, b, *, kernel, blur):
        return dense_kernel(x, y, kernel, blur) @ b

    def _softmin(self, x, y, h, *, eps, p):
        return -eps * torch.logsumexp(h[None, :] - dense_cost(x, y, p) / eps, dim=1)

    def memory_estimate(self, op, N, M, D, itemsize, grad=False):
        buffers = DENSE_BUFFERS.get(op.removesuffix("_grad"), 3)
        if grad or op.endswith("_grad"):
            buffers *= GRAD_FACTOR
        return int(buffers * N * M * itemsize)

    def memory_budget(self, device):
        if device.startswith("cuda"):
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return int(CUDA_BUDGET_FRACTION * free)
        return int(CPU_BUDGET_FRACTION * available_memory_bytes())
