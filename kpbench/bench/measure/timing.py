"""Timers, the calibrated number of calls per sample, pacing, and the speed measure.

Like ``timeit.autorange`` and asv's ``number``: the timed callable is the bound
computation alone (backend lookup, conversions, input checks and the memory pre-flight
happen before, once). The first call is timed alone (``first_call_s``: KeOps compilation,
caches, allocator warm-up) and never enters the statistics; then ``warmup`` untimed
calls; then ``number`` is calibrated so that one sample of ``number`` back-to-back calls
lasts at least ``min_sample_s`` (10 ms; one call when a call is longer), and ``repeats``
samples are taken. On CUDA a sample is timed with CUDA events recorded around its calls,
the device synchronised before and after (``timer="cuda_events"``); on the CPU with
``time.perf_counter`` (``timer="perf_counter"``).
"""
from __future__ import annotations

import itertools
import time

import numpy as np



def first_call(prepared, device: str):
    """The timer for ``device`` and the first call of ``prepared`` timed alone."""
    # a CUDA point where no CUDA device is visible can only be a custom op (the refusal
    # refuses the others), e.g. a test op exercising Ray's GPU scheduling: no device to sync
    timer = timer_for(device if cuda_available() else "cpu")
    first_call_s, out = timer.time_one(prepared.call)
    return timer, first_call_s, prepared.summarize(out)


def measure_speed(point, prepared, settings) -> dict:
    timer, first_call_s, summary = first_call(prepared, point.device)
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


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
