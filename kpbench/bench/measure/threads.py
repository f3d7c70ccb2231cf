"""Threads: every point pins torch's intra-op threads, OpenMP (KeOps' CPU code) and BLAS
(NumPy) to ``threads`` (environment variables for libraries loaded later, threadpoolctl
for those already loaded) and records what the libraries report, with the process's
CPU affinity."""
from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_threads(threads: int) -> None:
    """torch, OpenMP and BLAS threads of this process set to ``threads``."""
    import threadpoolctl
    import torch

    for variable in THREAD_VARIABLES:   # read by libraries loaded from now on (KeOps' .so)
        os.environ[variable] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(limits=threads)   # those already loaded


def thread_report() -> dict:
    """What the libraries of this process use now (threads, omp_threads, blas_threads)
    and where it may run (cpu_affinity)."""
    import threadpoolctl
    import torch

    pools = threadpoolctl.threadpool_info()

    def most(api):
        counts = [pool["num_threads"] for pool in pools if pool["user_api"] == api]
        return max(counts) if counts else None

    return dict(threads=torch.get_num_threads(), omp_threads=most("openmp"),
                blas_threads=most("blas"), cpu_affinity=cpu_affinity())


def cpu_affinity() -> str | None:
    """The CPUs this process may run on, as ranges: "0-1", "0,2-3" (None: not on Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    ranges: list[list[int]] = []
    for cpu in sorted(os.sched_getaffinity(0)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
