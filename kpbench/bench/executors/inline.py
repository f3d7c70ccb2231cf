"""The inline executor: the points run one after another in this process (for debugging,
and where Ray is missing), each under its SIGALRM timeout. A point stuck in native code
past the grace is recorded as ``timeout`` by a watchdog thread, which then ends the process
(exit code 124) rather than hang; rerunning the sweep resumes after it. A point that kills
its process (os._exit, a segfault) takes an inline sweep down with it (the rows already
stored stay); use the ray executor for crash isolation.
"""
from __future__ import annotations

import os
import socket
import sys
import threading

from kpbench.bench.executors.base import OnRow, failure_row, placed, run_point_with_timeout, utc_now


def run(points, kind, settings, on_row: OnRow, on_final: OnRow | None = None) -> None:
    for point in points:
        on_row(_run_point(point, kind, settings, on_final))


def _run_point(point, kind, settings, on_hang):
    watchdog = threading.Timer(settings.timeout_s + settings.hard_grace_s, _hard_timeout,
                               args=(point, kind, settings, on_hang))
    watchdog.daemon = True
    watchdog.start()
    started = utc_now()
    try:
        row = run_point_with_timeout(point, kind, settings)
    finally:
        watchdog.cancel()
    return placed(row, started, node=socket.gethostname(), node_ip=None,
                  gpu_ids=_inline_gpu_ids(point))


def _inline_gpu_ids(point) -> str:
    """The CUDA device an inline CUDA point ran on ("" for CPU points or without CUDA)."""
    if point.device != "cuda":
        return ""
    import torch

    return str(torch.cuda.current_device()) if torch.cuda.is_available() else ""


def _hard_timeout(point, kind, settings, on_hang: OnRow | None) -> None:
    row = failure_row(
        point, kind, "timeout",
        f"exceeded the timeout of {settings.timeout_s:g} s and was still stuck (in native code) "
        f"{settings.hard_grace_s:g} s later: the sweep process was ended (rerun to resume)")
    print(f"\nkpbench: point {row['key']} ({row['op']}, {row['backend']}, N={row['N']}) is stuck "
          "past its timeout; recording it as timeout and exiting", file=sys.stderr, flush=True)
    try:
        if on_hang is not None:
            on_hang(row)
    finally:
        os._exit(124)

