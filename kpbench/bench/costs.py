"""The cost model of each sweep op, and the time the machine's limits allow for a point.

Counted per pair (i, j) of points and per point, the least work any implementation of the
op does (so ``limit_s`` is a lower bound on its time, never a target that cannot be met):

* ``fma``: floating-point operations, each add, multiply, subtract or fused multiply-add
  one (a square root counted as one too: a lower bound, it is no cheaper anywhere);
* ``exp``: exponentials and logarithms;
* ``bytes``: memory traffic. An online (streaming) backend reads each input once and writes
  each output once (per point). A dense one also writes its N x M matrix once and reads it
  back at least once (2 elements per pair, 3 with a backward pass); Sinkhorn writes its four
  cost matrices once and reads them at every softmin.

===========================  ================================  ====  ===========================
op (family)                  fma per pair                      exp   points / repeats
===========================  ================================  ====  ===========================
kernel_product gaussian      2D + 1 (difference, square-sum,   1     x, y, b in; out out
                             weighted sum; scale folded in)
kernel_product laplacian     2D + 2 (+ sqrt)                   1
kernel_product energy        2D + 2 (+ sqrt)                   0
kernel_product_grad          forward + 3D + 2 (the backward    +1    dense: 3 elements per pair
                             recomputes k, D multiply-adds)
softmin p=2                  2D + 2 (h - C/eps, shift, sum)    1     + one log per point
softmin p=1                  2D + 3 (+ sqrt)                   1
sinkhorn                     softmin x pairs x (iterations+1)  1     pairs per iteration
                             (the last, differentiable step)          2NM + N^2 + M^2 (debiased)
sinkhorn_grad                sinkhorn + the backward of the    +1    on NM + N^2 pairs
                             last step (3D + 2 per pair)
===========================  ================================  ====  ===========================

The same formulas as the SASS predictor's minimal counts (scripts/cuda_sass.py).
Sinkhorn needs its iteration count (the row's ``iterations``, else the point's fixed
``iters``); a row without either (a peer that does not say how many its eps-scaling ran),
a flow step or a custom op has no limit.

``limit_s = max(fma / FMA rate, exp / exp rate, bytes / bandwidth)``: the work overlapped
perfectly. CPU rates from :mod:`kpbench.bench.machine` (one thread for a row pinned to one,
else all; bandwidth: the copy rate, read + write), GPU rates from :mod:`kpbench.devices`
(float64: exp counted at the FP64 FMA rate, a lower bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kpbench import devices

FAMILIES_WITH_COST = ("kernel", "softmin", "sinkhorn")
KERNEL_EXTRA = {"gaussian": (1, 1), "laplacian": (2, 1), "energy": (2, 0)}   # fma, exp beyond 2D


@dataclass(frozen=True)
class Cost:
    fma: float
    exp: float
    bytes: float

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.fma + other.fma, self.exp + other.exp, self.bytes + other.bytes)

    def times(self, k: float) -> "Cost":
        return Cost(self.fma * k, self.exp * k, self.bytes * k)


def _pass(pairs: float, fma: float, exp: float, bytes_: float) -> Cost:
    return Cost(pairs * fma, pairs * exp, bytes_)


def kernel_cost(kernel: str, N: int, M: int, D: int, itemsize: int, grad: bool, dense: bool) -> Cost:
    fma_extra, exp = KERNEL_EXTRA[kernel]
    pairs = N * M
    points = (N * D + M * D + M + N) * itemsize
    cost = _pass(pairs, 2 * D + fma_extra, exp, points + (2 * pairs * itemsize if dense else 0))
    if grad:   # the backward: k again (or read back), D multiply-adds for the gradient
        cost += _pass(pairs, 3 * D + 2, exp, (N * D + N) * itemsize + (pairs * itemsize if dense else 0))
    return cost


def softmin_cost(p: int, N: int, M: int, D: int, itemsize: int, dense: bool) -> Cost:
    pairs = N * M
    points = (N * D + M * D + M + N) * itemsize
    return _pass(pairs, 2 * D + (2 if p == 2 else 3), 1, points + (2 * pairs * itemsize if dense else 0)) \
        + Cost(0, N, 0)


def sinkhorn_cost(p: int, N: int, M: int, D: int, itemsize: int, iterations: int, grad: bool,
                  dense: bool) -> Cost:
    pairs = 2 * N * M + N * N + M * M       # xy, yx, xx, yy
    softmins = iterations + 1               # the eps schedule, then the last step
    per_softmin_fma = 2 * D + (2 if p == 2 else 3)
    points = (N + M) * (D + 2) * itemsize
    if dense:   # the four cost matrices written once, read at every softmin
        traffic = pairs * itemsize * (1 + softmins)
    else:
        traffic = 4 * points * softmins
    cost = Cost(pairs * per_softmin_fma * softmins, (pairs + 2 * (N + M)) * softmins, traffic)
    if grad:
        grad_pairs = N * M + N * N
        cost += _pass(grad_pairs, 3 * D + 2, 1, N * D * itemsize + (grad_pairs * itemsize if dense else 0))
    return cost


def op_cost(row: dict, dense: bool) -> Cost | None:
    """The cost of a speed row's point, None where the model has none."""
    from kpbench.bench.ops import OPS

    info = OPS.get(row.get("op"))
    if info is None or info.family not in FAMILIES_WITH_COST:
        return None
    N, M, D = (int(row[k]) for k in ("N", "M", "D"))
    itemsize = 8 if row.get("dtype") == "float64" else 4
    if info.family == "kernel":
        if row.get("kernel") not in KERNEL_EXTRA:
            return None
        return kernel_cost(row["kernel"], N, M, D, itemsize, info.grad, dense)
    if info.family == "softmin":
        return softmin_cost(int(row["p"]), N, M, D, itemsize, dense)
    iterations = row.get("iterations")
    if iterations is None or _missing(iterations):   # a peer that does not say: the fixed count
        iterations = row.get("iters")
    if iterations is None or _missing(iterations):
        return None
    return sinkhorn_cost(int(row["p"]), N, M, D, itemsize, int(iterations), info.grad, dense)


def _missing(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass(frozen=True)
class Rates:
    fma: float
    exp: float
    bandwidth: float
    source: str          # "measured cpu" | "device table H100"


def cpu_rates(limits: dict, dtype: str, threads) -> Rates:
    """The measured rates for a row run on ``threads`` threads: one thread's, else all
    threads', never below one thread's (a machine can always run on one; an all-thread rate
    below it was measured while other work held the CPUs)."""
    one = limits["rates"]["1"]
    r = one if threads == 1 else {k: max(v, one[k]) for k, v in limits["rates"]["all"].items()}
    return Rates(r[f"fma_{dtype}"], r[f"exp_{dtype}"], r["copy"], "measured cpu")


def device_rates(gpu_name, dtype: str) -> Rates | None:
    device = devices.find(gpu_name)
    if device is None:
        return None
    if dtype == "float64":
        return Rates(device.fma64_per_s, device.fma64_per_s, device.bandwidth, f"device table {device.name}")
    return Rates(device.fma_per_s, device.exp_per_s, device.bandwidth, f"device table {device.name}")


def limit_seconds(cost: Cost, rates: Rates) -> float:
    return max(cost.fma / rates.fma, cost.exp / rates.exp, cost.bytes / rates.bandwidth)


def limit_columns(row: dict, limits: dict | None, dense: bool) -> dict:
    """``limit_s``, ``limit_frac`` (= limit_s / time_median_s), ``limit_source`` of an ok
    speed row; {} where there is no cost model, no time or no rates for its device."""
    time_s = row.get("time_median_s")
    if row.get("status") != "ok" or not time_s or _missing(time_s):
        return {}
    cost = op_cost(row, dense)
    if cost is None:
        return {}
    dtype = row.get("dtype") if row.get("dtype") in ("float32", "float64") else "float32"
    if row.get("device") == "cuda":
        rates = device_rates(row.get("gpu"), dtype)
    else:
        rates = cpu_rates(limits, dtype, row.get("threads")) if limits else None
    if rates is None:
        return {}
    limit = limit_seconds(cost, rates)
    return {"limit_s": limit, "limit_frac": limit / float(time_s), "limit_source": rates.source}


def is_dense(backend: str) -> bool:
    """Whether the backend materialises N x M matrices (an unknown one counts as online:
    the smaller traffic, so the limit stays a lower bound)."""
    from kpbench.backends import _instantiate

    try:
        return bool(_instantiate(backend).capabilities.dense)
    except Exception:
        return False


def annotator(kind: str, points, warn=None):
    """``row -> row`` adding the limit columns to a speed sweep's rows; the CPU limits are
    read from the cache, else measured now (a few seconds, once per machine)."""
    if kind != "speed":
        return lambda row: row
    limits = None
    if any(p.device != "cuda" for p in points):
        from kpbench.bench.machine import cached_or_measured

        limits = cached_or_measured(warn)
    dense: dict[str, bool] = {}

    def annotate(row: dict) -> dict:
        name = row.get("backend")
        if name not in dense:
            dense[name] = is_dense(name)
        return {**row, **limit_columns(row, limits, dense[name])}

    return annotate
