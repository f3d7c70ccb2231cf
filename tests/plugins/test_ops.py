"""Test-only sweep ops, registered as a kpbench plugin (``plugins.use(<this file>)``).

``_test_raise`` raises (``_test_memory_error`` a MemoryError, ``_test_cuda_oom`` torch's
CUDA out-of-memory error), ``_test_sleep`` sleeps ``blur`` seconds, ``_test_hang`` too but
with SIGALRM blocked (as a long native call would be), ``_test_exit`` and ``_test_kill``
end their process. They need no backend, so they run on any device.

Computations of known cost, whose rows the tests can predict: ``_test_spin`` busy-waits
``blur`` seconds per call (no sleep: its wake-up latency would blur the figure) and
appends the (start, end) of each call to ``SPIN_CALLS``: the calls the measurement made and
how long each lasted by its own clock, whatever the load of the machine;
``_test_alloc`` allocates and writes ``blur`` MiB per call (the memory sweep's peak),
``_test_first_slow`` is a compile-then-run workload.
"""
import os
import signal
import time

import numpy as np

from kpbench.bench.ops import OpInfo, Prepared, Summary, register_op

TEST_OPS = ("_test_raise", "_test_sleep", "_test_hang", "_test_exit", "_test_kill",
            "_test_spin", "_test_alloc", "_test_memory_error", "_test_cuda_oom")
MiB = 1 << 20
SPIN_CALLS: list[tuple[float, float]] = []
FIRST_CALL_S, LATER_CALL_S = 0.3, 0.002   # "_test_first_slow": a compile-then-run workload


def _prepare(point, data) -> Prepared:
    def call():
        if point.op == "_test_raise":
            raise RuntimeError("test op raised on purpose")
        if point.op == "_test_memory_error":
            raise MemoryError("test op out of host memory")
        if point.op == "_test_cuda_oom":   # the class exists in CPU builds of torch too
            import torch

            raise torch.cuda.OutOfMemoryError("test op out of CUDA memory")
        if point.op == "_test_sleep":
            time.sleep(point.blur)
        elif point.op == "_test_hang":   # like a long native call: deaf to the timeout alarm
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            try:
                time.sleep(point.blur)
            finally:   # a pending alarm fires now, as after a native call returns
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        elif point.op == "_test_spin":
            start = time.perf_counter()
            spin(point.blur)
            SPIN_CALLS.append((start, time.perf_counter()))
        elif point.op == "_test_alloc":   # every page written: resident, not just reserved
            return float(np.ones(int(point.blur * MiB) // 8).sum())
        elif point.op == "_test_exit":
            os._exit(3)
        elif point.op == "_test_kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return point.blur

    return Prepared(call, lambda out: Summary(float(out)))


def spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def _prepare_first_slow(point, data) -> Prepared:
    calls = []

    def call():
        time.sleep(FIRST_CALL_S if not calls else LATER_CALL_S)
        calls.append(1)
        return len(calls)

    return Prepared(call, lambda out: Summary(float(out)))


for _name in TEST_OPS:
    register_op(OpInfo(_name, "custom", False, None), _prepare)
register_op(OpInfo("_test_first_slow", "custom", False, None), _prepare_first_slow)
