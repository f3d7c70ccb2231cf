"""Measure which backends give the same bits run after run: two runs, max difference.

    python scripts/determinism.py                 # N=1000, threads 2 (and 1), CPU (+ CUDA if seen)
    python scripts/determinism.py --N 500 --json determinism.json

Every run is a fresh process (``--child``) that computes the sweep ops (kernel product and
its gradient, softmin, Sinkhorn to convergence and its gradient) on the same seeded inputs
(kpbench.bench.ops) for numpy float64, torch float32/float64 and keops
float32/float64 (and the CUDA device where one is visible), with torch, OpenMP and BLAS
threads all fixed to ``--threads``. Runs A and B use the same settings: their max
difference says whether the point is bit-reproducible. Run C uses another thread count:
its difference to A says what changing the threads does. The result feeds the table of
kpbench.backends.determinism.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

OPS = ("kernel_product", "kernel_product_grad", "softmin", "sinkhorn", "sinkhorn_grad")
CONFIGS = (("numpy", "float64"), ("torch", "float32"), ("torch", "float64"),
           ("keops", "float32"), ("keops", "float64"))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def points(N: int, devices: list[str]):
    from kpbench.backends import available_backends
    from kpbench.bench.plan import Point

    usable = set(available_backends())
    for device in devices:
        for backend, dtype in CONFIGS:
            if backend not in usable or (backend == "numpy" and device != "cpu"):
                continue
            for op in OPS:
                if backend == "numpy" and op.endswith("_grad"):
                    continue
                sink = op.startswith("sinkhorn")
                yield Point(op=op, backend=backend, kernel="sinkhorn" if sink else (
                    "softmin" if op == "softmin" else "gaussian"), N=N, M=N, D=3, blur=0.05,
                    p=None if op.startswith("kernel") else 2, reach=None, dtype=dtype,
                    device=device, seed=0, iters=None, scaling=0.5 if sink else None)


def label(point) -> str:
    return f"{point.backend}|{point.dtype}|{point.device}|{point.op}"


def child(N: int, threads: int, out: str) -> None:
    """One run: every point's output vector (or value) into ``out`` (npz)."""
    import torch

    from kpbench.bench import ops
    from kpbench.bench.inputs import make_data

    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    for point in points(N, devices):
        prepared = ops.prepare(point, make_data(point))
        summary = prepared.summarize(prepared.call())
        results[label(point)] = summary.vector if summary.vector is not None else np.array([summary.value])
    np.savez(out, **results)


def run_child(N: int, threads: int, folder: str, name: str) -> dict:
    env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
    out = os.path.join(folder, f"{name}.npz")
    subprocess.run([sys.executable, __file__, "--child", "--N", str(N), "--threads",
                    str(threads), "--out", out], env=env, check=True)
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def max_differences(a: dict, b: dict) -> dict:
    """(backend, dtype, device) -> (max abs difference, max relative difference) over the ops."""
    table: dict = {}
    for name in a:
        backend, dtype, device, _op = name.split("|")
        diff = np.abs(a[name] - b[name])
        rel = float(np.max(diff) / max(np.max(np.abs(a[name])), 1e-300))
        old = table.get((backend, dtype, device), (0.0, 0.0))
        table[(backend, dtype, device)] = (max(old[0], float(np.max(diff))), max(old[1], rel))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="threads of runs A and B")
    parser.add_argument("--other-threads", type=int, default=1, help="threads of run C")
    parser.add_argument("--json", help="write the table as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.N, args.threads, args.out)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        a, b, c = (run_child(args.N, t, folder, name) for t, name in (
            (args.threads, "a"), (args.threads, "b"), (args.other_threads, "c")))
    same, other = max_differences(a, b), max_differences(a, c)
    rows = []
    print(f"N = M = {args.N}, D = 3, ops: {', '.join(OPS)}")
    print(f"{'backend':8} {'dtype':8} {'device':6} {'A vs B abs':>11} {'A vs B rel':>11} "
          f"{'threads ' + str(args.threads) + ' vs ' + str(args.other_threads) + ' rel':>18}  bit-identical")
    for key, (abs_diff, rel_diff) in same.items():
        rows.append({"backend": key[0], "dtype": key[1], "device": key[2], "max_abs_diff": abs_diff,
                     "max_rel_diff": rel_diff, "other_threads_max_rel_diff": other[key][1],
                     "bit_identical": abs_diff == 0.0})
        print(f"{key[0]:8} {key[1]:8} {key[2]:6} {abs_diff:11.3g} {rel_diff:11.3g} "
              f"{other[key][1]:18.3g}  {abs_diff == 0.0}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"N": args.N, "threads": args.threads,
                                                       "other_threads": args.other_threads,
                                                       "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
