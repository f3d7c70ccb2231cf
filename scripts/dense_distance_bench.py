"""Dense torch distances before and after issue 23 (items 1 and 4), timed in one process.

Variants (each swapped into kpbench.backends.torch_dense for its turn):
  old     |x|^2 + |y|^2 - 2<x, y> at the raw coordinates; sqrt of that for p = 1 and the
          laplacian/energy kernels (the code before the fix, kept here only)
  new     the backend's code: the expansion on centred clouds; distances from differences
  direct  differences (torch.cdist without matmul) for p = 2 and the gaussian as well

Each round runs every variant once per workload in turn (the order rotates), so the
machine's noise hits all alike; the report is the median over rounds of each variant's
time divided by old's time in the same round.

    python scripts/dense_distance_bench.py [--rounds 7] [--sizes 1000 3000] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from kpbench import losses
from kpbench.backends import get_backend, torch_dense as td


def _old_squared_distances(x, y):
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return d2.clamp_min(0)


def _old_sqrt(d2):
    positive = d2 > 0
    return torch.where(positive, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), 0.0)


def _old_kernel(x, y, kernel, blur):
    d2 = _old_squared_distances(x, y)
    if kernel == "gaussian":
        return torch.exp(d2 / (-2 * blur**2))
    if kernel == "laplacian":
        return torch.exp(_old_sqrt(d2) / -blur)
    return -_old_sqrt(d2)


def _old_cost(x, y, p):
    d2 = _old_squared_distances(x, y)
    return d2 / 2 if p == 2 else _old_sqrt(d2)


def _direct_kernel(x, y, kernel, blur):
    if kernel == "gaussian":
        return torch.exp(td.distances(x, y).square() / (-2 * blur**2))
    return NEW[0](x, y, kernel, blur)


def _direct_cost(x, y, p):
    return td.distances(x, y).square() / 2 if p == 2 else td.distances(x, y)


NEW = (td.dense_kernel, td.dense_cost)
VARIANTS = {"old": (_old_kernel, _old_cost), "new": NEW, "direct": (_direct_kernel, _direct_cost)}


def workloads(sizes):
    """(name, N, function of (x, y)) for each size."""
    bk = get_backend("torch")
    for n in sizes:
        b = torch.rand(n, 1)
        yield ("kp gaussian", n, lambda x, y, b=b: bk.kernel_product(x, y, b, kernel="gaussian", blur=0.05))
        yield ("kp laplacian", n, lambda x, y, b=b: bk.kernel_product(x, y, b, kernel="laplacian", blur=0.05))
        for p in (2, 1):
            yield (f"sinkhorn p={p}", n, lambda x, y, p=p: losses.sinkhorn(
                x=x, y=y, p=p, blur=0.05, scaling=0.5, backend="torch"))
        if n <= 1000:
            yield ("sinkhorn p=2 +grad", n, _with_grad)


def _with_grad(x, y):
    x = x.clone().requires_grad_(True)
    losses.sinkhorn(x=x, y=y, p=2, blur=0.05, scaling=0.5, backend="torch").backward()


def timed(fn, x, y) -> float:
    start = time.perf_counter()
    fn(x, y)
    return time.perf_counter() - start


def run(sizes, rounds):
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, D=3, "
          f"blur .05, scaling .5; {rounds} rounds, median ratio to old in the same round")
    print(f"{'workload':22s} {'N':>5s} {'old s':>8s} " + " ".join(f"{v + '/old':>11s}" for v in VARIANTS if v != "old"))
    for name, n, fn in workloads(sizes):
        gen = torch.Generator().manual_seed(n)
        x, y = torch.rand(n, 3, generator=gen), torch.rand(n, 3, generator=gen)
        times = {v: [] for v in VARIANTS}
        names = list(VARIANTS)
        for r in range(rounds + 1):                      # round 0 warms up, not kept
            for v in names[r % len(names):] + names[: r % len(names)]:
                td.dense_kernel, td.dense_cost = VARIANTS[v]
                t = timed(fn, x, y)
                if r:
                    times[v].append(t)
        td.dense_kernel, td.dense_cost = NEW
        ratios = {v: statistics.median(a / b for a, b in zip(times[v], times["old"])) for v in names}
        print(f"{name:22s} {n:5d} {statistics.median(times['old']):8.4f} "
              + " ".join(f"{ratios[v]:11.3f}" for v in names if v != "old"), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args.sizes, args.rounds)


if __name__ == "__main__":
    main()
