"""Peak memory of one call, after one untimed call (so compilation and caches are not
counted): the peak *extra* bytes beyond what was allocated before it (the inputs).

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
"""
from __future__ import annotations

import ctypes
import gc

from .timing import cuda_available


def measure_memory(point, prepared, settings) -> dict:
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


def is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def release_cuda_cache(point) -> None:
    if point.device == "cuda" and cuda_available():
        import torch

        torch.cuda.empty_cache()
