"""How much the sweep's timed call costs over the raw computation, at small N.

For each backend and primitive at N = M = 100, D = 3 (float32; numpy float64), in one
process and interleaved (raw, bound, raw, bound, ... so that drift hits both alike):

* raw:    the backend's computation itself (``Backend._kernel_product`` / ``_softmin``);
* bound:  what a sweep times, ``kpbench.losses.bind_*(...)`` (checks done before, once);
* sweep:  a real sweep row (``run_point``) for the same point, a raw sample taken just
          before each of its samples (the sweep's pacing hook, outside its timed region).

Each timing is ``timeit`` with ``number`` calibrated to ~10 ms per sample. The overhead
is the median of the paired differences (bound sample - the raw sample taken just before
it), which cancels the drift of a shared machine; sweep / raw is the median of the
ratios row sample / the raw sample just before it. Prints a table and the goals of
issue 14: overhead (bound - raw) <= 5 us, sweep / raw within 10 %.

    python scripts/bench_overhead.py [--rounds 15] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit

import numpy as np
import torch

from kpbench import losses
from kpbench.backends import available_backends, get_backend
from kpbench.bench.inputs import cast, make_data
from kpbench.bench.measure import run_point, set_pacer
from kpbench.bench.measure.threads import pin_threads
from kpbench.bench.plan import Point
from kpbench.bench.settings import Settings

N = 100


def point(op: str, backend: str) -> Point:
    dtype = "float64" if backend == "numpy" else "float32"
    return Point(op=op, backend=backend, kernel="gaussian" if op == "kernel_product" else "softmin",
                 N=N, M=N, D=3, blur=0.1, p=None if op == "kernel_product" else 2, reach=None,
                 dtype=dtype, device="cpu", seed=0, iters=None, scaling=None)


def calls(pt: Point):
    """(raw, bound) zero-argument callables of the point's computation."""
    bk = get_backend(pt.backend)
    data = make_data(pt)
    x, y = (cast(v, bk, pt.dtype, "cpu") for v in (data.x, data.y))
    if pt.op == "kernel_product":
        b = cast(data.b, bk, pt.dtype, "cpu")
        raw = lambda: bk._kernel_product(x, y, b, kernel="gaussian", blur=pt.blur)  # noqa: E731
        bound = losses.bind_kernel_product(x, y, b, kernel="gaussian", blur=pt.blur,
                                           backend=pt.backend)
    else:
        h = cast(data.h, bk, pt.dtype, "cpu")
        raw = lambda: bk._softmin(x, y, h, eps=pt.eps, p=2)  # noqa: E731
        bound = losses.bind_softmin(x, y, h, eps=pt.eps, p=2, backend=pt.backend)
    return raw, bound


def per_call(call, number: int) -> float:
    return timeit.timeit(call, number=number) / number


def interleaved(raw, bound, rounds: int) -> tuple[list[float], list[float]]:
    number, _ = timeit.Timer(raw).autorange()   # >= 0.2 s: plenty of calls per sample
    number = max(1, number // 20)               # ~10 ms samples
    raws, bounds = [], []
    for _ in range(rounds):
        raws.append(per_call(raw, number))
        bounds.append(per_call(bound, number))
    return raws, bounds


def sweep_row_beside_raw(pt: Point, raw, rounds: int) -> tuple[dict, list[float]]:
    """A real sweep row (run_point) of ``pt``, and a raw sample taken just before each of
    its timed samples (through the sweep's pacing hook, outside its timed region), with
    the same number of calls: the paired ratio cancels the machine's drift."""
    beside = []

    def raw_sample_first(number: int) -> int:
        beside.append(per_call(raw, number))
        return number

    set_pacer(raw_sample_first)
    try:
        row = run_point(pt, "speed", Settings(repeats=rounds, threads=1))
    finally:
        set_pacer(None)
    return row, beside


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    pin_threads(1)
    rows = []
    for backend in [b for b in ("numpy", "torch", "keops") if b in available_backends()]:
        for op in ("kernel_product", "softmin"):
            pt = point(op, backend)
            raw, bound = calls(pt)
            for _ in range(3):   # first calls: compilation (KeOps), caches
                raw(), bound()
            raws, bounds = interleaved(raw, bound, args.rounds)
            row, beside = sweep_row_beside_raw(pt, raw, args.rounds)
            sweep_samples = row["time_samples_s"]
            rows.append(dict(backend=backend, op=op, raw_us=statistics.median(raws) * 1e6,
                             bound_us=statistics.median(bounds) * 1e6,
                             overhead_us=statistics.median(b - r for r, b in zip(raws, bounds)) * 1e6,
                             sweep_us=row["time_median_s"] * 1e6,
                             sweep_over_raw=statistics.median(
                                 s / r for s, r in zip(sweep_samples, beside))))
    print(f"{'backend':8s} {'op':15s} {'raw us':>9s} {'bound us':>9s} {'overhead':>9s} "
          f"{'sweep us':>9s} {'sweep/raw':>9s}")
    for r in rows:
        print(f"{r['backend']:8s} {r['op']:15s} {r['raw_us']:9.1f} {r['bound_us']:9.1f} "
              f"{r['overhead_us']:9.2f} {r['sweep_us']:9.1f} {r['sweep_over_raw']:9.3f}")
    worst_overhead = max(r["overhead_us"] for r in rows)
    worst_ratio = max(abs(r["sweep_over_raw"] - 1) for r in rows)
    print(f"worst overhead {worst_overhead:.2f} us (goal <= 5); "
          f"worst |sweep/raw - 1| {worst_ratio:.1%} (goal <= 10%)  [CPU, torch {torch.__version__}, "
          f"numpy {np.__version__}, 1 thread]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
