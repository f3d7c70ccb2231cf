"""Float32 Sinkhorn divergence of clouds far from the origin, per backend and peer (issue 23).

    python scripts/offset_table.py [--offsets 0 100 500 1e4] [--only torch,keops,...]

N = 500, M = 400 points in [0, 1]^2 moved by each offset, blur .05, p = 2, scaling .5,
GeomLoss's eps schedule (schedule="geomloss" for kpbench's backends; GeomLoss runs its own;
POT has no eps-scaling). For each backend, the float32 value is compared with the same
backend's float64 value, so only float32 arithmetic is judged, not the solver:
  arith  float64 on the same float32-rounded coordinates (the backend's arithmetic alone)
  user   float64 on the original float64 coordinates (what a user sees: the rounding of the
         coordinates to float32 as well: up to 1.5e-5 of a unit at offset 500, 4.9e-4 at 1e4)
"numpy" is float64 only: its row gives the reference's own change from rounding the
coordinates to float32 (user; arith does not apply).
"torch-before" is dense torch with the cost code before the fix (kept in
scripts/dense_distance_bench.py). POT stops at its iteration cap (1000) at this blur, in
both precisions alike: its convergence warnings are silenced. "cuda" runs on a GPU where there is one, otherwise by
host execution of the same kernels (KPBENCH_CUDA_HOST=1, set here when no GPU is found).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dense_distance_bench as bench  # noqa: E402  (the old cost code)

from kpbench import losses  # noqa: E402
from kpbench.backends import availability, torch_dense  # noqa: E402

N, M, D, BLUR, P, SCALING = 500, 400, 2, 0.05, 2, 0.5
OURS = {"torch-before": "torch", "torch": "torch", "keops": "keops", "cuda": "cuda"}
PEERS = ["geomloss-tensorized", "geomloss-online", "pot"]


def clouds(offset, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((N, D)) + offset, rng.random((M, D)) + offset


@contextlib.contextmanager
def old_cost_code(active: bool):
    if active:
        torch_dense.dense_kernel, torch_dense.dense_cost = bench.VARIANTS["old"]
    try:
        yield
    finally:
        torch_dense.dense_kernel, torch_dense.dense_cost = bench.NEW


def value(name, x, y, dtype) -> float:
    backend = OURS.get(name, name)
    options = dict(schedule="geomloss") if name in OURS else {}
    t = lambda v: torch.tensor(v, dtype=dtype)
    with old_cost_code(name == "torch-before"):
        return float(losses.sinkhorn(x=t(x), y=t(y), p=P, blur=BLUR, scaling=SCALING,
                                     backend=backend, **options))


def errors(name, offset) -> tuple[float, float]:
    """(arith, user) relative errors of float32, see the module docstring."""
    x, y = clouds(offset)
    xr, yr = (v.astype(np.float32).astype(np.float64) for v in (x, y))
    if name == "numpy":
        ref = lambda a, b: float(losses.sinkhorn(x=a, y=b, p=P, blur=BLUR, backend="numpy"))
        return math.nan, abs(ref(xr, yr) - ref(x, y)) / abs(ref(x, y))
    single = value(name, xr, yr, torch.float32)
    same_inputs, original = value(name, xr, yr, torch.float64), value(name, x, y, torch.float64)
    return abs(single - same_inputs) / abs(same_inputs), abs(single - original) / abs(original)


def ensure_cuda_target():
    if not availability()["cuda"][0]:
        os.environ.setdefault("KPBENCH_CUDA_HOST", "1")


def table(names, offsets):
    header = f"{'backend':20s}" + "".join(f"{f'{o:g} arith':>13s}{f'{o:g} user':>12s}" for o in offsets)
    print(header)
    for name in names:
        ok, why = availability().get(OURS.get(name, name), (False, "unknown backend"))
        if not ok:
            print(f"{name:20s} unavailable: {why}")
            continue
        cells = []
        for offset in offsets:
            arith, user = errors(name, offset)
            cells.append(f"{arith:13.1e}{user:12.1e}")
        print(f"{name:20s}" + "".join(cells), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", type=float, nargs="+", default=[0.0, 100.0, 500.0, 1e4])
    parser.add_argument("--only", default=",".join([*OURS, "numpy", *PEERS]),
                        help="comma-separated rows (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sinkhorn did not converge")
    ensure_cuda_target()
    print(f"Sinkhorn, N={N}, M={M}, D={D}, blur {BLUR}, p={P}, scaling {SCALING}, GeomLoss "
          f"schedule; relative error of float32 vs float64 (see the docstring)")
    table(args.only.split(","), args.offsets)


if __name__ == "__main__":
    main()
