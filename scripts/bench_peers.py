"""Ours vs the libraries people use, side by side in ONE process (host CPU figures).

    python scripts/bench_peers.py [--quick] [--repeats R] [--only dense,keops,kp]

D=3, float32, one torch thread, blur .05, p=2, scaling .5 (GeomLoss's defaults), uniform
weights on two uniform clouds in the unit cube. Calls are interleaved (ours, peer, ours,
peer, ...) so that a load change on a shared machine hits both; each figure is the median
of R calls after one untimed warm-up call (KeOps compilation). Ratios < 1: ours faster.

* dense: losses.sinkhorn(backend="torch") vs GeomLoss SamplesLoss(backend="tensorized"),
  value and value + gradient (w.r.t. x), at N = M = 1e3 and 5e3; ours on GeomLoss's
  eps schedule (schedule="geomloss": the same iterations) and on ours.
* keops: losses.sinkhorn(backend="keops") vs GeomLoss backend="online" at 5e3 (and more
  with --keops-sizes).
* kp: losses.kernel_product(backend="keops") (bound once, as the sweep times it) vs raw
  pykeops LazyTensor code, Gaussian kernel, N = M = 1e4.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from kpbench import losses

BLUR, P, SCALING, D = 0.05, 2, 0.5, 3


def clouds(n, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g)
    y = torch.rand(n, D, generator=g)
    return x.requires_grad_(grad), y


def with_gradient(call, x):
    def run():
        value = call()
        (grad,) = torch.autograd.grad(value, [x])
        return value
    return run


def interleaved(calls: dict, repeats: int) -> dict:
    for call in calls.values():
        call()   # warm-up: compilation, allocator
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def sinkhorn_calls(n, backend, peer_backend, grad):
    from geomloss import SamplesLoss

    x, y = clouds(n, grad=grad)
    peer = SamplesLoss("sinkhorn", p=P, blur=BLUR, scaling=SCALING, backend=peer_backend)
    calls = {
        f"ours ({backend}, geomloss schedule)": losses.bind_loss(
            "sinkhorn", x=x, y=y, p=P, blur=BLUR, scaling=SCALING, backend=backend,
            schedule="geomloss"),
        f"ours ({backend}, kpbench schedule)": losses.bind_loss(
            "sinkhorn", x=x, y=y, p=P, blur=BLUR, scaling=SCALING, backend=backend),
        f"geomloss {peer_backend}": lambda: peer(x, y),
    }
    if grad:
        calls = {name: with_gradient(call, x) for name, call in calls.items()}
    return calls


def kernel_product_calls(n):
    from pykeops.torch import LazyTensor

    x, y = clouds(n)
    b = torch.rand(n, 1)

    def raw():
        x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        K = (-((x_i - y_j) ** 2).sum(-1) / (2 * BLUR**2)).exp()
        return K @ b

    ours = losses.bind_kernel_product(x, y, b, kernel="gaussian", blur=BLUR, backend="keops")
    assert torch.allclose(ours(), raw(), rtol=1e-4, atol=1e-6)
    return {"ours (keops)": ours, "raw pykeops": raw}


def report(title, medians):
    names = list(medians)
    peer = medians[names[-1]]
    print(f"\n{title}")
    for name in names:
        print(f"  {name:<36} {medians[name]:9.4f} s   ratio vs {names[-1]}: "
              f"{medians[name] / peer:5.2f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N=1e3 only, 3 repeats")
    parser.add_argument("--only", default="dense,keops,kp")
    parser.add_argument("--dense-sizes", default="1000,5000")
    parser.add_argument("--keops-sizes", default="5000")
    parser.add_argument("--kp-size", type=int, default=10000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else args.repeats
    dense_sizes = [1000] if args.quick else [int(n) for n in args.dense_sizes.split(",")]
    keops_sizes = [1000] if args.quick else [int(n) for n in args.keops_sizes.split(",")]
    import geomloss

    print(f"host CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} thread), geomloss "
          f"{geomloss.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"CXXFLAGS={os.environ.get('CXXFLAGS', '')!r}; D={D} float32 blur={BLUR} p={P} "
          f"scaling={SCALING}; medians of {repeats} interleaved calls")
    only = args.only.split(",")
    for n in dense_sizes if "dense" in only else []:
        for grad in (False, True):
            report(f"Sinkhorn dense N=M={n} {'value+gradient' if grad else 'value'}",
                   interleaved(sinkhorn_calls(n, "torch", "tensorized", grad), repeats))
    for n in keops_sizes if "keops" in only else []:
        report(f"Sinkhorn KeOps N=M={n} value",
               interleaved(sinkhorn_calls(n, "keops", "online", False), repeats))
    if "kp" in only:
        report(f"Gaussian kernel product KeOps N=M={args.kp_size}",
               interleaved(kernel_product_calls(args.kp_size), max(repeats, 5)))


if __name__ == "__main__":
    main()
