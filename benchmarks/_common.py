"""Shared set-up of the asv benchmarks: points, inputs and skips, built on the sweep's own
ops (kpbench.bench.ops), so asv times exactly what ``kpbench sweep`` times.

``scripts/asv_history.sh`` times older commits with today's benchmark files: the names are
imported from today's places, else from those of older commits (kpbench.bench.workloads /
measure.py before the measure package, kpbench.suite.* before the move to kpbench.bench).

An unavailable combination (a backend missing here, no CUDA device, numpy with autograd)
raises NotImplementedError in ``setup``, which asv reports as skipped (n/a).
"""
from __future__ import annotations

import os
import pathlib
import sys

try:
    import kpbench  # noqa: F401  (installed: asv's virtualenv environments)
except ImportError:
    # environment_type "existing" on a source checkout that is not pip-installed
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import kpbench.losses  # noqa: E402,F401  (torch, backends: imported once by asv's forkserver)

try:   # today's layout
    from kpbench.bench import ops as _ops
    from kpbench.bench.inputs import make_data
    from kpbench.bench.settings import Settings
    from kpbench.bench.measure.accuracy import relative_error
    from kpbench.bench.measure.memory import measure_memory as _measure_memory
    from kpbench.bench.measure.point import check_supported as _check_supported
    _old = None
except ImportError:   # an older commit: workloads + measure.py, in kpbench.bench or kpbench.suite
    try:
        from kpbench.bench import measure as _old_measure, workloads as _old
    except ImportError:
        from kpbench.suite import measure as _old_measure, workloads as _old
    make_data, relative_error = _old.make_data, _old.relative_error
    Settings = _old_measure.MeasureSettings
for _place in ("kpbench.bench.plan", "kpbench.bench.spec", "kpbench.suite.spec"):
    try:
        Point = __import__(_place, fromlist=["Point"]).Point
        break
    except ImportError:
        continue

BACKENDS = ["numpy", "torch", "keops", "cuda"]
DEVICES = ["cpu", "cuda"]
# CI-sized grids. Sinkhorn (eps-scaling, 4 softmins per iteration) stops at 1000: at
# N=4000 one call takes 7-15 s on one CPU core, too slow for asv's repeated samples.
PRIMITIVE_NS = [200, 1000, 4000]
SINKHORN_NS = [200, 1000]
# Backends that compile at first use (KeOps formulas, CUDA kernels): one call in setup,
# so that compilation is never timed. Few distinct formulas: one kernel, one softmin (p=2).
COMPILING = ("keops", "cuda")
KERNEL = dict(kernel="gaussian", blur=0.1, p=None, reach=None, iters=None, scaling=None)
SINKHORN = dict(kernel=None, blur=0.05, p=2, reach=None, iters=None, scaling=0.5)
SOFTMIN = dict(kernel=None, blur=0.1, p=2, reach=None, iters=None, scaling=None)
# torch intra-op threads (default 1, like the sweep's one CPU per point): on a small shared
# machine torch's default (all cores) spins and made N=200 calls ~100x slower than 1 thread.
THREADS_ENV = "KPBENCH_ASV_THREADS"
PARAMS = {"kernel_product": KERNEL, "kernel_product_grad": KERNEL, "softmin": SOFTMIN,
          "sinkhorn": SINKHORN, "sinkhorn_grad": SINKHORN}


def make_point(op: str, backend: str, device: str, n: int) -> Point:
    dtype = "float64" if backend == "numpy" else "float32"
    return Point(op=op, backend=backend, N=n, M=n, D=3, dtype=dtype, device=device, seed=0,
                 **PARAMS[op])


def supported_point(op: str, backend: str, device: str, n: int) -> Point:
    """The point, or NotImplementedError (asv: skipped) where it cannot run here."""
    if backend == "cuda" and device != "cuda":
        raise NotImplementedError("the cuda backend runs on a CUDA device only")
    point = make_point(op, backend, device, n)
    try:
        if _old is not None:
            _old_measure.check_supported(point)
        else:
            from kpbench.backends import get_backend

            _check_supported(point, get_backend(point.backend), "accuracy")
    except Exception as exc:  # unavailable backend / device / dtype / autograd
        raise NotImplementedError(str(exc)) from exc
    return point


def prepare(point, data):
    return (_old or _ops).prepare(point, data)


def reference(point, data):
    return (_old or _ops).reference(point, data)


def measure_memory(point, prepared, data) -> dict:
    if _old is not None:
        return _old_measure.measure_memory(point, data, Settings())
    return _measure_memory(point, prepared, Settings())


def set_torch_threads() -> None:
    import torch

    threads = int(os.environ.get(THREADS_ENV, "1"))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class Workload:
    """Base of the benchmark classes: ``op``; params backend x device x N."""

    op = "kernel_product"
    param_names = ["backend", "device", "N"]
    params = [BACKENDS, DEVICES, PRIMITIVE_NS]
    timeout = 180

    def setup(self, backend, device, n):
        self.point = supported_point(self.op, backend, device, n)
        set_torch_threads()
        self.data = make_data(self.point)
        self.prepared = prepare(self.point, self.data)
        if backend in COMPILING:
            self.prepared.call()

    def run(self):
        """One call, synchronised on CUDA so the time covers the work."""
        out = self.prepared.call()
        if self.point.device == "cuda":
            import torch

            torch.cuda.synchronize()
        return out


class PeakMemory(Workload):
    """The sweep's own per-call peak (kpbench.bench.measure.memory): on CPU the
    worker's resident high-water mark over one call beyond what was resident before it
    (``rss_delta``), on CUDA torch's allocator peak (``cuda_max_allocated``); bytes.
    Unlike asv's ``peakmem_*`` (the whole benchmark process's maximum RSS: interpreter
    and torch included, flat below N=1e3), it shows the call's own memory."""

    def peak_bytes(self) -> int:
        measured = measure_memory(self.point, self.prepared, self.data)
        if measured["peak_mem_bytes"] is None:
            raise NotImplementedError("no per-call memory measure here (/proc not writable)")
        return measured["peak_mem_bytes"]


class Accuracy(Workload):
    """Accuracy vs the float64 reference: the reference itself (numpy) is skipped."""

    def setup(self, backend, device, n):
        if backend == "numpy":
            raise NotImplementedError("numpy is the float64 reference (error 0 by definition)")
        super().setup(backend, device, n)

    def relative_error(self) -> float:
        summary = self.prepared.summarize(self.run())
        return relative_error(summary, reference(self.point, self.data))
