#!/usr/bin/env python
"""Benchmark of the custom CUDA backend against KeOps and dense PyTorch (needs a GPU).

    python scripts/bench_cuda.py                      # the full table
    python scripts/bench_cuda.py --sizes 1e4 1e5 --dims 3 --repeats 5 --json out.json

Part 1: Gaussian kernel product out = K(x, y) b, N = M in --sizes, D in --dims, float32,
for cuda / keops / torch (dense). Part 2: Sinkhorn divergence N = M = --sinkhorn-size,
D = 3, blur 0.05, p = 2 (cuda / keops), with the default eps-scaling and at a fixed number
of iterations. Each point: one warm-up call (compilation, caches), then --repeats timed
calls, each between torch.cuda.synchronize(); the median is reported, with the first
call's time and the relative error against KeOps' result (else dense torch's).

The target for the cuda backend: Gaussian KP at N = M = 1e6, D = 3 within 1.5x of the
exponential-throughput floor (N M exp2 at 16 per clock per SM: about 0.24 s on an H100 SXM)
and no slower than KeOps. The floor is printed when the clock rate can be read.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 16])
    parser.add_argument("--backends", nargs="+", default=["cuda", "keops", "torch"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blur", type=float, default=0.1)
    parser.add_argument("--sinkhorn-size", type=float, default=1e5)
    parser.add_argument("--sinkhorn-iters", type=int, default=10,
                        help="fixed-iteration Sinkhorn timing (kernel speed); 0 to skip")
    parser.add_argument("--no-sinkhorn", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    return args


def timed(fn, repeats: int):
    """(first call seconds, [timed call seconds], last result)."""
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return first, times, result


def exp_floor_seconds(pairs: float) -> float | None:
    """N M exponentials at the special-function units' rate: the device table's (kpbench.devices)
    for a GPU it knows, else its MUFU lanes at the clock the device reports, if it can be read."""
    import torch

    from kpbench import devices

    props = torch.cuda.get_device_properties(0)
    known = devices.find(props.name)
    if known is not None:
        return pairs / known.exp_per_s
    clock_khz = getattr(props, "clock_rate", None)
    if not clock_khz:
        try:
            import cupy

            clock_khz = cupy.cuda.runtime.getDeviceProperties(0)["clockRate"]
        except Exception:
            return None
    # 16 MUFU lanes per SM on every GPU of the table (compute capability 8.0 to 9.0)
    rate = props.multi_processor_count * devices.DEVICES["H100"].mufu_lanes * clock_khz * 1e3
    return pairs / rate


REFERENCE_ORDER = ("keops", "torch", "cuda")   # rel_err is measured against the first that ran


def run_point(op, make_call, repeats):
    """One row (status ok / oom / unavailable / error, timings) and the last result."""
    import torch

    from kpbench.errors import BackendUnavailable, MemoryBudgetExceeded

    row = {"op": op, "status": "ok"}
    try:
        first, times, result = timed(make_call(), repeats)
    except BackendUnavailable as exc:
        return {**row, "status": "unavailable", "error": str(exc)}, None
    except (MemoryBudgetExceeded, torch.cuda.OutOfMemoryError) as exc:
        torch.cuda.empty_cache()
        return {**row, "status": "oom", "error": str(exc).splitlines()[0]}, None
    except Exception as exc:  # a crash is a finding; the other points go on
        torch.cuda.empty_cache()
        return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}"}, None
    row.update(first_s=first, median_s=statistics.median(times), min_s=min(times),
               repeats=len(times))
    return row, result


def run_backends(args, op, call_for, point, rows):
    """Time ``call_for(backend)`` on every backend, then add the relative errors."""
    results, point_rows = {}, []
    for name in args.backends:
        row, result = run_point(op, lambda name=name: call_for(name), args.repeats)
        row = {"backend": name, **point, **row}
        point_rows.append(row)
        if result is not None:
            results[name] = result.detach().double().reshape(-1)
        print_row(row)
    ref_name = next((n for n in REFERENCE_ORDER if n in results), None)
    for row in point_rows:
        if row["backend"] == ref_name:
            row["rel_err"] = "ref"
        elif row["backend"] in results:
            ref = results[ref_name]
            row["rel_err"] = float((results[row["backend"]] - ref).norm() / ref.norm())
    rows.extend(point_rows)


def bench_kernel_product(args, rows):
    import torch

    from kpbench.backends import get_backend

    for size in args.sizes:
        n = int(size)
        for d in args.dims:
            gen = torch.Generator(device="cuda").manual_seed(args.seed)
            x = torch.rand(n, d, device="cuda", generator=gen)
            y = torch.rand(n, d, device="cuda", generator=gen)
            b = torch.rand(n, device="cuda", generator=gen)

            def call_for(name):
                backend = get_backend(name)       # raises BackendUnavailable: reported
                return lambda: backend.kernel_product(x, y, b, kernel="gaussian", blur=args.blur,
                                                      validate=False)

            point = {"N": n, "M": n, "D": d, "dtype": "float32",
                     "exp_floor_s": exp_floor_seconds(float(n) * n)}
            run_backends(args, "gaussian_kp", call_for, point, rows)
            del x, y, b
            torch.cuda.empty_cache()


def bench_sinkhorn(args, rows):
    import torch

    from kpbench import losses

    n = int(args.sinkhorn_size)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    x = torch.rand(n, 3, device="cuda", generator=gen)
    y = torch.rand(n, 3, device="cuda", generator=gen) + 0.1
    modes = [("sinkhorn_eps_scaling", {})]
    if args.sinkhorn_iters:
        modes.append((f"sinkhorn_{args.sinkhorn_iters}_iters", {"iters": args.sinkhorn_iters}))
    sinkhorn_args = argparse.Namespace(**{**vars(args),
                                          "backends": [b for b in args.backends if b != "torch"]})
    for op, extra in modes:
        def call_for(name, extra=extra):
            return lambda: losses.sinkhorn(None, x, None, y, p=2, blur=0.05, backend=name, **extra)

        run_backends(sinkhorn_args, op, call_for, {"N": n, "M": n, "D": 3, "dtype": "float32"},
                     rows)


def print_row(row):
    print("  " + " ".join(f"{k}={v}" for k, v in row.items() if k != "error")
          + (f" error={row['error'][:120]!r}" if "error" in row else ""), flush=True)


def print_table(rows):
    header = f"{'op':24s} {'backend':8s} {'N':>9s} {'D':>3s} {'status':11s} {'median s':>10s} " \
             f"{'first s':>9s} {'x floor':>8s} {'rel err':>9s}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        median = f"{r['median_s']:.4g}" if "median_s" in r else "-"
        first = f"{r['first_s']:.3g}" if "first_s" in r else "-"
        floor = (f"{r['median_s'] / r['exp_floor_s']:.2f}"
                 if r.get("exp_floor_s") and "median_s" in r else "-")
        err = r.get("rel_err", "-")
        err = f"{err:.1e}" if isinstance(err, float) else err
        print(f"{r['op']:24s} {r['backend']:8s} {r['N']:9d} {r['D']:3d} {r['status']:11s} "
              f"{median:>10s} {first:>9s} {floor:>8s} {err:>9s}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from kpbench.backends.cuda import host

    if host.enabled():
        print(f"bench_cuda: {host.ENV}=1 runs the kernels on the host (correctness only); "
              "no timing of it is a GPU figure: unset it", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}")
    from kpbench.backends import availability

    for name in args.backends:
        ok, why = availability()[name]
        print(f"  {name}: {'available' if ok else 'unavailable: ' + why}")
    rows = []
    bench_kernel_product(args, rows)
    if not args.no_sinkhorn:
        bench_sinkhorn(args, rows)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"device": props.name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
