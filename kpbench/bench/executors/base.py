"""The executors' contract and what they share: the timeout of a point and its failure row.

An executor is a module with ``run(points, kind, settings, on_row, on_final)``: it measures
every point (:func:`kpbench.bench.measure.run_point`) and hands each row to ``on_row`` as it
finishes; ``on_final(row)`` stores a row and everything buffered at once (a process about to
end). :func:`kpbench.bench.executors.get` names them: ``inline`` and ``ray`` (``--executor``), ``interleaved`` (the
variants of ``--interleave``; its ``on_row`` takes ``store=``, the variant). The orchestrator
is :mod:`kpbench.bench.sweep`.

Timeouts, the same for both executors: a point runs under a SIGALRM set to the spec's
``timeout_s``, counted from when the point starts in its process, which raises inside
the point; Python code stops at once, a single native call (one big matmul) when it
returns, and the row is recorded as ``timeout``. A point still stuck in native code
``hard_grace_s`` (default 60) seconds later is killed (inline: the process ends; ray: below).

``ray`` (default): every point is a Ray task with ``max_retries=0`` (a crash is a
finding, not something to retry). CPU points ask ``num_cpus`` (default 1), CUDA points
``num_gpus`` (default 1) and ``num_cpus``, so Ray spreads them over all CPUs/GPUs of all
nodes; twice as many tasks as the cluster has slots are submitted (the next point
waits at a node, not on the driver; slots are recounted as nodes join or die). Each task first tells the driver it started (after its worker's start-up
and imports); one not done ``timeout_s + hard_grace_s`` after that is cancelled with
``ray.cancel(force=True)`` (its worker is killed) and recorded as ``timeout``. A worker
that dies (os._exit, SIGKILL, the kernel's OOM killer) gives ``error`` with Ray's
message; Ray's own memory monitor killing the task gives ``oom``; a node dying under
its points gives ``error`` "node died: ..." naming the node (retryable: a rerun with
``--retry-failed`` measures those again). The sweep goes on.

Placement: every row names the ``node`` (Ray node id; inline: the host name),
``node_ip``, ``gpu_ids`` (the GPU ids Ray assigned, "" for none) and the point's
``point_started_at``/``point_ended_at`` (UTC, taken where the point ran). Threads: the
workers get OMP_NUM_THREADS/MKL_NUM_THREADS/OPENBLAS_NUM_THREADS = the point's threads
before KeOps' OpenMP or NumPy's BLAS initialise (see :func:`.cluster.point_runtime_env`).
"""
from __future__ import annotations

import datetime as _dt
import signal
import threading
from typing import Callable

from kpbench.results.meta import host_metadata
from kpbench.bench.measure import base_row, run_point
from kpbench.bench.settings import Settings

OnRow = Callable[[dict], None]


def failure_row(point, kind: str, status: str, error: str) -> dict:
    """The row of a point that produced none itself (timeout, crashed worker)."""
    row = base_row(point, kind)
    row.update(status=status, error=error)
    return row


class PointTimeout(BaseException):
    """Raised by SIGALRM inside a point (a BaseException: measure must not catch it)."""


def run_point_with_timeout(point, kind: str, settings: Settings) -> dict:
    """run_point under a SIGALRM after ``settings.timeout_s`` (main thread only; see the
    module docstring)."""
    try:
        with _alarm(settings.timeout_s):
            return run_point(point, kind, settings)
    except PointTimeout:
        row = failure_row(point, kind, "timeout", f"exceeded the timeout of {settings.timeout_s:g} s")
        row.update(host_metadata())
        return row


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def placed(row: dict, started: _dt.datetime, *, node, node_ip, gpu_ids: str) -> dict:
    """``row`` with where the point ran and when (started: before run_point, ended: now)."""
    row.update(node=node, node_ip=node_ip, gpu_ids=gpu_ids, point_started_at=started,
               point_ended_at=utc_now())
    return row


class _alarm:
    """SIGALRM after ``seconds`` raising PointTimeout (only in the main thread)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = (threading.current_thread() is threading.main_thread()
                       and hasattr(signal, "SIGALRM"))

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False

    @staticmethod
    def _raise(signum, frame):
        raise PointTimeout()
