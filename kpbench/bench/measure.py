"""Measure one sweep point: speed, peak memory or accuracy; never lose the row.

:func:`run_point` returns the point's row (POINT_COLUMNS + results + host metadata)
whatever happens; the status says what did:

* ``ok``; ``oom``: torch.cuda.OutOfMemoryError or MemoryError during the run;
* ``unsupported``: the backend lacks the dtype, the device, autograd, or is unavailable
  here (BackendUnavailable, with its reason);
* ``skipped``: refused before running because a dense backend's memory estimate exceeds
  the budget (the spec's ``memory_budget``, else the backend's own), or the backend
  refused itself (MemoryBudgetExceeded); the error text gives the estimate;
* ``error``: any other exception, as "Type: message".
Timeouts and crashed workers are recorded by the executors.

Speed, like ``timeit.autorange`` and asv's ``number``: the timed callable is the bound
computation alone (:func:`kpbench.losses.bind`: backend lookup, conversions, input
checks and the memory pre-flight happen before, once). The first call is timed alone
(``first_call_s``: KeOps compilation, caches, allocator warm-up) and never enters the
statistics; then ``warmup`` untimed calls; then ``number`` is calibrated so that one
sample of ``number`` back-to-back calls lasts at least ``min_sample_s`` (10 ms; one
call when a call is longer), and ``repeats`` (>= 10 by default) samples are taken.
Each row keeps the per-call time of every sample (``time_samples_s``), their median,
min, quartiles and IQR. On CUDA a sample is timed with CUDA events recorded around
its calls, the device synchronised before it and after it (``timer="cuda_events"``);
on the CPU with ``time.perf_counter`` (``timer="perf_counter"``).

Threads: every point pins torch's intra-op threads, OpenMP (KeOps' CPU code) and BLAS
(NumPy) to ``threads`` (environment variables for libraries loaded later,
threadpoolctl for those already loaded) and records what the libraries report, with
the process's CPU affinity.

Memory: after one untimed call (so compilation and caches are not counted), the peak
*extra* bytes of one more call, beyond what was allocated before it (the inputs):

* CUDA (``mem_method="cuda_max_allocated"``): ``torch.cuda.reset_peak_memory_stats()``,
  then ``max_memory_allocated() - memory_allocated()`` before the call. This is torch's
  caching allocator only (KeOps/CUDA kernels that allocate outside it are not seen).
* CPU (``mem_method="rss_delta"``): the process's resident high-water mark is reset by
  writing "5" to ``/proc/self/clear_refs`` (Linux), then ``VmHWM`` (read from
  ``/proc/self/status`` after the call) minus ``VmRSS`` before it. Freed heap memory is
  first returned to the system (``malloc_trim``) so a block freed by the previous call
  and reused does not hide the peak. On a Ray cluster each point runs in a worker
  process that runs one point at a time, so the delta is this point's own; with the
  inline executor it is measured in the sweep's own process, the same way.
  Where /proc is not writable the row keeps the dense estimate (``mem_method="estimate"``).

Accuracy: one call, ``rel_err = |value - ref| / |ref|`` (norm-based for vector outputs)
against the float64 reference on the same inputs (see :mod:`kpbench.bench.workloads`).
For ``sinkhorn`` with N = M <= 2000, p = 2, balanced and blur <= 0.1,
``rel_err_exact`` compares S_eps with the exact W2^2/2 (uniform weights: an assignment,
scipy.optimize.linear_sum_assignment) -- the entropic bias plus the arithmetic error.
"""
from __future__ import annotations

import ctypes
import gc
import itertools
import os
import time
from dataclasses import dataclass

import numpy as np

from kpbench import plugins
from kpbench.errors import BackendUnavailable, MemoryBudgetExceeded, format_bytes
from kpbench.results.determinism import deterministic
from kpbench.results.fingerprint import input_hash
from kpbench.results.meta import host_metadata
from kpbench.bench import workloads

EXACT_MAX_N = 2000
EXACT_MAX_BLUR = 0.1
ERROR_MAX_CHARS = 2000
MIN_SAMPLE_S = 0.010         # one timed sample lasts at least this long (asv: sample_time)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
INT64_MAX = 2**63 - 1        # the largest value of the store's integer columns


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure (sent with each point to its worker)."""

    repeats: int = 10
    warmup: int = 1
    memory_budget: int | None = None
    threads: int | None = None       # torch/OpenMP/BLAS threads; None: leave the defaults
    min_sample_s: float = MIN_SAMPLE_S
    plugins: tuple = ()              # kpbench plugins the worker loads (kpbench.plugins)


class Unsupported(Exception):
    """The backend cannot run this point (dtype, device, autograd)."""


class Unavailable(Unsupported):
    """Unsupported because of this machine (no CUDA device visible), not by design."""


class Skipped(Exception):
    """Refused before running (memory pre-flight)."""


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_MAX_CHARS else text[:ERROR_MAX_CHARS] + " [...]"


def base_row(point, kind: str) -> dict:
    row = point.as_row()
    row.update(key=point.key(kind), eps=point.eps)
    return row


def run_point(point, kind: str, settings: MeasureSettings = MeasureSettings()) -> dict:
    """The row of ``point`` measured for ``kind`` (speed | memory | accuracy)."""
    plugins.load(settings.plugins)
    row = base_row(point, kind)
    row.update(host_metadata())
    row["deterministic"] = deterministic(point.backend, point.dtype, point.device)
    try:
        if settings.threads:
            pin_threads(settings.threads)
        if workloads.OPS[point.op].family != "custom":
            check_supported(point, kind)
            row["backend_settings"] = backend_settings(point.backend)
            estimate = dense_estimate(point)
            # past int64 (N = M = 2**31-1) the column stays null; a refusal's text gives it
            row["mem_estimate_bytes"] = estimate if estimate is None or estimate <= INT64_MAX else None
            check_budget(point, estimate, settings.memory_budget)
        data = workloads.make_data(point)
        row.update(data_origin(data.clouds))
        weights = [w for w in (data.clouds.a, data.clouds.b) if w is not None]
        row["input_hash"] = input_hash([data.x, data.y, data.b, data.h, data.c, *weights], point.dtype)
        row.update(MEASURES[kind](point, data, settings))
        row.update(thread_report())
        row["status"] = "ok"
    except (Unsupported, BackendUnavailable) as exc:
        row.update(status="unsupported", error=str(exc),
                   retryable=isinstance(exc, (Unavailable, BackendUnavailable))
                   and not getattr(exc, "by_design", False))
    except (Skipped, MemoryBudgetExceeded) as exc:
        # a budget taken from the free memory of the moment may let it run later
        row.update(status="skipped", error=str(exc), retryable=settings.memory_budget is None)
    except MemoryError as exc:
        row.update(status="oom", error=error_text(exc), retryable=True)
    except Exception as exc:
        row.update(status="oom" if _is_cuda_oom(exc) else "error", error=error_text(exc),
                   retryable=True)
    finally:
        _release_cuda_cache(point)
    return row


def data_origin(clouds) -> dict:
    """The row's record of where the point's clouds came from."""
    return dict(data_hash=clouds.file_hash, data_size_bytes=clouds.file_size,
                data_replaced=clouds.replaced)


# -- before running ---------------------------------------------------------------
def check_supported(point, kind: str = "accuracy") -> None:
    from kpbench.backends import get_backend

    backend = get_backend(point.backend)   # BackendUnavailable -> unsupported
    refusal = backend.timing_refusal() if kind in ("speed", "memory") else None
    if refusal:   # e.g. CUDA kernels executed on the host: right numbers, no GPU timings
        raise Unsupported(f"backend {point.backend!r}: {refusal}")
    caps = backend.capabilities
    if not getattr(caps, point.dtype):
        raise Unsupported(f"backend {point.backend!r} does not support {point.dtype}")
    if workloads.OPS[point.op].grad and not caps.autograd:
        raise Unsupported(f"backend {point.backend!r} has no autograd (op {point.op})")
    if not caps.primitives and workloads.OPS[point.op].family in ("kernel", "softmin"):
        raise Unsupported(f"backend {point.backend!r} serves losses only (no {point.op})")
    if point.device == "cuda":
        if not caps.cuda:
            raise Unsupported(f"backend {point.backend!r} does not run on CUDA")
        if not _cuda_available():
            raise Unavailable("device cuda requested but no CUDA device is visible here")


def backend_settings(name: str) -> str | None:
    """The backend's own settings (a peer's library, version, stopping rule...) as JSON."""
    import json

    from kpbench.backends import get_backend

    settings = getattr(get_backend(name), "settings", None)
    return json.dumps(settings(), sort_keys=True, default=str) if settings else None


LOSS_CALLS_KEPT_FOR_BACKWARD = 4


def dense_estimate(point) -> int | None:
    """Bytes of the point's computation on a dense backend (None: not dense): for a loss,
    what the backend estimates for that loss (Sinkhorn and Hausdorff: the cost matrices
    its solve caches, N = M = the larger cloud for the self problems)."""
    from kpbench.backends import get_backend
    from kpbench.losses import memory_op

    backend = get_backend(point.backend)
    if not backend.capabilities.dense:
        return None
    info = workloads.OPS[point.op]
    itemsize = np.dtype(point.dtype).itemsize
    if info.family not in ("sinkhorn", "flow"):
        return int(backend.memory_estimate(info.primitive, point.N, point.M, point.D, itemsize,
                                           grad=info.grad))
    op = memory_op("sinkhorn" if info.family == "sinkhorn" else point.loss)
    size = max(point.N, point.M)
    estimate = backend.memory_estimate(op, size, size, point.D, itemsize, grad=info.grad)
    # a differentiated loss made of primitive calls keeps the buffers of all of them for
    # the backward (MMD: three); Sinkhorn's and Hausdorff's estimates count theirs
    kept = LOSS_CALLS_KEPT_FOR_BACKWARD if info.grad and op in ("kernel_product", "softmin") else 1
    return int(estimate * kept)


def check_budget(point, estimate: int | None, budget: int | None) -> None:
    """The pre-flight: Skipped when a dense estimate exceeds the budget (None: the backend's)."""
    if estimate is None:
        return
    if budget is None:
        from kpbench.backends import get_backend

        budget = get_backend(point.backend).memory_budget(point.device)
    if budget is not None and estimate > budget:
        raise Skipped(
            f"pre-flight: {point.backend} {point.op} at N={point.N}, M={point.M} needs an "
            f"estimated {format_bytes(estimate)} ({estimate} bytes), over the memory budget "
            f"of {format_bytes(budget)}")


# -- speed ---------------------------------------------------------------------------
def _first_call(point, data):
    """Prepare the workload and time its first call (compilation, caches) apart."""
    prepared = workloads.prepare(point, data)
    # a CUDA point where no CUDA device is visible can only be a custom op (check_supported
    # refuses the others), e.g. a test op exercising Ray's GPU scheduling: no device to sync
    timer = timer_for(point.device if _cuda_available() else "cpu")
    first_call_s, out = timer.time_one(prepared.call)
    return prepared, timer, first_call_s, prepared.summarize(out)


def measure_speed(point, data, settings: MeasureSettings) -> dict:
    prepared, timer, first_call_s, summary = _first_call(point, data)
    for _ in range(settings.warmup):
        prepared.call()
    number = calibrate_number(prepared.call, timer, settings.min_sample_s)
    samples = []
    for _ in range(settings.repeats):
        # an interleaved sweep's worker waits here for its turn (outside the timing) and
        # takes the number of calls all its variants agreed on
        number = _pacer(number)
        samples.append(timer.time_many(prepared.call, number) / number)
    q1, median, q3 = (float(q) for q in np.percentile(samples, [25, 50, 75]))
    return dict(
        first_call_s=first_call_s, time_median_s=median, time_min_s=min(samples),
        time_q1_s=q1, time_q3_s=q3, time_iqr_s=q3 - q1, time_samples_s=samples,
        repeats=len(samples), number=number, warmup=settings.warmup, timer=timer.name,
        value=summary.value, iterations=summary.iterations,
    )


def _no_pacing(number: int) -> int:
    return number


_pacer = _no_pacing


def set_pacer(pacer=None) -> None:
    """Call ``number = pacer(number)`` before every timed sample (kpbench.bench.interleave:
    wait for this variant's turn, take the calls per sample of the session); None: none."""
    global _pacer
    _pacer = pacer or _no_pacing


def calibrate_number(call, timer, min_sample_s: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... calls that last >= min_sample_s together."""
    number = 1
    for factor in itertools.cycle((2, 2.5, 2)):
        if timer.time_many(call, number) >= min_sample_s:
            return number
        number = int(number * factor)


class WallTimer:
    """CPU timing: perf_counter around the calls (nothing to synchronise)."""

    name = "perf_counter"

    def time_one(self, call):
        start = time.perf_counter()
        out = call()
        return time.perf_counter() - start, out

    def time_many(self, call, number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            call()
        return time.perf_counter() - start


class CudaEventTimer:
    """GPU timing: CUDA events recorded around the calls on the current stream, the
    device synchronised before (no earlier work counted) and after (all of it counted)."""

    name = "cuda_events"

    def __init__(self, synchronize, new_event):
        self.synchronize, self.new_event = synchronize, new_event

    def time_one(self, call):
        out = []
        seconds = self.time_many(lambda: out.append(call()), 1)
        return seconds, out[0]

    def time_many(self, call, number: int) -> float:
        self.synchronize()
        start, end = self.new_event(), self.new_event()
        start.record()
        for _ in range(number):
            call()
        end.record()
        self.synchronize()
        return start.elapsed_time(end) / 1e3   # milliseconds -> seconds


def timer_for(device: str):
    if device == "cuda":
        import torch

        return CudaEventTimer(torch.cuda.synchronize,
                              lambda: torch.cuda.Event(enable_timing=True))
    return WallTimer()


# -- memory ---------------------------------------------------------------------------
def measure_memory(point, data, settings: MeasureSettings) -> dict:
    prepared = workloads.prepare(point, data)
    prepared.call()   # compile, fill caches: not part of the computation's peak
    if point.device == "cuda":
        peak, out = _cuda_peak(prepared.call)
        method = "cuda_max_allocated"
    else:
        peak, out = _rss_peak(prepared.call)
        method = "rss_delta" if peak is not None else "estimate"
    summary = prepared.summarize(out)
    return dict(peak_mem_bytes=peak, mem_method=method, value=summary.value,
                iterations=summary.iterations)


def _cuda_peak(call):
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = call()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before), out


def _rss_peak(call):
    _fix_mmap_threshold()
    gc.collect()
    _malloc_trim()
    if not _reset_high_water_mark():
        return None, call()
    before = _proc_status_bytes("VmRSS")
    out = call()
    return max(0, _proc_status_bytes("VmHWM") - before), out


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


M_MMAP_THRESHOLD = -3          # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def _fix_mmap_threshold() -> None:
    """Every block >= 1 MiB gets its own mmap, returned to the system when freed.

    glibc raises its mmap threshold dynamically (up to 32 MiB) after large frees, so
    freed N x M buffers stay in the heap and the next call touches fresh pages: the RSS
    peak of a 3-buffer dense kernel product at N = 2000 read 4 to 6 buffers; with the
    threshold fixed it reads 2.99 (measured here). The setting is process-wide.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass   # not glibc: peaks may then include reused heap pages


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass   # not glibc: the measure may then miss a reused block


# -- accuracy -------------------------------------------------------------------------
def measure_accuracy(point, data, settings: MeasureSettings) -> dict:
    prepared, _timer, first_call_s, summary = _first_call(point, data)
    result = dict(first_call_s=first_call_s, value=summary.value, iterations=summary.iterations,
                  marginal_err=summary.marginal_err, converged=summary.converged)
    if workloads.OPS[point.op].family == "custom":
        return result
    if is_the_reference(point):
        truth = summary
        result["rel_err"] = 0.0
    else:
        truth = workloads.reference(point, data)
        result["rel_err"] = workloads.relative_error(summary, truth)
    result["truth_converged"], result["truth_marginal_err"] = truth.converged, truth.marginal_err
    result["grad_fd_rel_err"] = workloads.grad_fd_error(point, data)
    if exact_applies(point) and getattr(data.clouds, "a", None) is None \
            and getattr(data.clouds, "b", None) is None:   # an assignment: uniform weights only
        exact = exact_ot_w2(data.x, data.y)
        result["rel_err_exact"] = abs(summary.value - exact) / abs(exact)
    return result


def is_the_reference(point) -> bool:
    """The point computes exactly what :func:`workloads.reference` would."""
    return (point.backend == "numpy" and point.dtype == "float64" and point.iters is None
            and not workloads.OPS[point.op].grad)


def exact_applies(point) -> bool:
    return (point.op == "sinkhorn" and point.p == 2 and point.reach is None
            and point.N == point.M <= EXACT_MAX_N and point.blur <= EXACT_MAX_BLUR)


def exact_ot_w2(x: np.ndarray, y: np.ndarray) -> float:
    """W2^2 / 2 between uniform clouds of equal size: an optimal assignment."""
    from scipy.optimize import linear_sum_assignment

    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


MEASURES = {"speed": measure_speed, "memory": measure_memory, "accuracy": measure_accuracy}


# -- helpers ---------------------------------------------------------------------------
def pin_threads(threads: int) -> None:
    """torch, OpenMP and BLAS threads of this process set to ``threads``."""
    import torch
    import threadpoolctl

    for variable in THREAD_VARIABLES:   # read by libraries loaded from now on (KeOps' .so)
        os.environ[variable] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(limits=threads)   # those already loaded


def thread_report() -> dict:
    """What the libraries of this process use now (threads, omp_threads, blas_threads)
    and where it may run (cpu_affinity)."""
    import torch
    import threadpoolctl

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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _release_cuda_cache(point) -> None:
    if point.device == "cuda" and _cuda_available():
        import torch

        torch.cuda.empty_cache()
