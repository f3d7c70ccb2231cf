"""A synthetic results store for scale tests and benchmarks: ``--rows N`` sweep rows.

    python scripts/make_store.py --rows 60000 --out /tmp/store60k

Rows have the real schema (kpbench.results.schema) and plausible values (times growing
like N^2 for the dense backends and N^2/ncores for KeOps, memory like N^2 for the dense
ones, OOM past a size, a few timeouts and errors), written as the store writes them: parts
of ``--rows-per-part`` rows (8 by default: a 600-point sweep's 75 parts), ``--rows-per-run``
rows a run. Runs come in pairs with the same keys (a sweep and its rerun), so a report
keeps half the rows as the latest per key.

Every row is marked ``synthetic`` (and its host ``synthetic-*``): the report and compare
say so, and they never pass for measurements.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import pathlib
import sys
import time
import uuid

import numpy as np
import pyarrow as pa

from kpbench.results.schema import SWEEP_SCHEMA
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.plan import point_key

OPS = (("kernel_product", "gaussian"), ("softmin", "gaussian"), ("sinkhorn", "sinkhorn"),
       ("kernel_product_grad", "gaussian"))
BACKENDS = ("numpy", "torch", "keops")
SIZES = (100, 300, 1000, 3000, 10000, 30000, 100000)
DTYPES = ("float32", "float64")
BLURS = (0.05, 0.1, 0.5)
D_VALUES = (2, 3)
DENSE_LIMIT = 30000          # dense backends run out of memory past this N
SAMPLES = 7


def grid() -> list[dict]:
    """The points of one synthetic sweep (seed left out), in a stable order."""
    points = []
    for (op, kernel), backend, n, dtype, blur, d in itertools.product(
            OPS, BACKENDS, SIZES, DTYPES, BLURS, D_VALUES):
        points.append(dict(op=op, backend=backend, kernel=kernel, N=n, M=n, D=d, blur=blur,
                           p=None if op.startswith("kernel_product") else 2, reach=None, dtype=dtype, device="cpu", iters=None,
                           scaling=0.9 if op == "sinkhorn" else None, tol=None))
    return points


def run_rows(points: list[dict], run: int, rows: int, rng: np.random.Generator) -> pa.Table:
    """``rows`` rows of run number ``run`` (its points: the grid from an offset, seed run // 2)."""
    seed = run // 2
    chosen = [points[(run * 7 + i) % len(points)] for i in range(rows)]
    n = np.array([p["N"] for p in chosen], dtype=np.int64)
    dense = np.array([p["backend"] != "keops" for p in chosen])
    f64 = np.array([p["dtype"] == "float64" for p in chosen])
    status = np.where(dense & (n > DENSE_LIMIT), "oom", "ok").astype(object)
    roll = rng.random(rows)
    status[(status == "ok") & (roll < 0.01)] = "timeout"
    status[(status == "ok") & (roll > 0.995)] = "error"
    ok = status == "ok"
    base = np.where(dense, 2e-9, 4e-10) * n.astype(float) ** 2 * np.where(f64, 2.0, 1.0) + 1e-4
    median = base * rng.lognormal(0.0, 0.05, rows)
    spread = median * rng.uniform(0.01, 0.08, rows)
    samples = median[:, None] * rng.lognormal(0.0, 0.03, (rows, SAMPLES))
    mem = np.where(dense, 12 * n.astype(float) ** 2, 64 * n.astype(float)).astype(np.int64)
    started = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=10 * run)
    point_starts = [started + dt.timedelta(seconds=float(s)) for s in np.arange(rows) * 0.1]
    kind = "speed"
    columns = {name: [p[name] for p in chosen] for name in
               ("op", "backend", "kernel", "N", "M", "D", "blur", "p", "reach", "dtype", "device",
                "iters", "scaling", "tol")}
    columns["seed"] = [seed] * rows
    columns["key"] = [point_key(kind, {**p, "seed": seed}) for p in chosen]
    columns["status"] = list(status)
    columns["error"] = [None if s in ("ok",) else f"synthetic {s}" for s in status]
    columns["eps"] = [p["blur"] ** 2 if p["op"] in ("softmin", "sinkhorn") else None for p in chosen]
    timed = {"time_median_s": median, "time_min_s": median * 0.97, "time_iqr_s": spread,
             "time_q1_s": median - spread / 2, "time_q3_s": median + spread / 2,
             "first_call_s": median * 3}
    for name, values in timed.items():
        columns[name] = [float(v) if k else None for v, k in zip(values, ok)]
    columns["time_samples_s"] = [list(map(float, s)) if k else None for s, k in zip(samples, ok)]
    columns["repeats"] = [SAMPLES if k else None for k in ok]
    columns["number"] = [1 if k else None for k in ok]
    columns["warmup"] = [1 if k else None for k in ok]
    columns["timer"] = ["perf_counter" if k else None for k in ok]
    columns["peak_mem_bytes"] = [int(m) if k else None for m, k in zip(mem, ok)]
    columns["mem_method"] = ["rss_delta" if k else None for k in ok]
    columns["mem_estimate_bytes"] = [int(m) if d else None for m, d in zip(mem, dense)]
    columns["rel_err"] = [float(e) if k else None for e, k in
                          zip(np.where(f64, 1e-14, 1e-6) * rng.lognormal(0, 1, rows), ok)]
    columns["iterations"] = [31 if p["op"] == "sinkhorn" else None for p in chosen]
    columns["threads"] = columns["omp_threads"] = columns["blas_threads"] = [2] * rows
    columns["cpu_affinity"] = ["0-1"] * rows
    columns["node"] = [f"synthetic-node-{run % 16:02d}"] * rows
    columns["node_ip"] = [f"127.0.0.{run % 16 + 1}"] * rows
    columns["gpu_ids"] = [""] * rows
    columns["point_started_at"] = point_starts
    columns["point_ended_at"] = [s + dt.timedelta(seconds=0.09) for s in point_starts]
    columns["timeout_s"] = [120.0] * rows
    columns["retryable"] = list(status != "ok")
    meta = {"run_id": uuid.UUID(int=int(rng.integers(2**62)) << 64 | run).hex, "sweep": kind,
            "executor": "ray", "git_commit": "0" * 40, "host": f"synthetic-node-{run % 16:02d}",
            "cpu": "synthetic CPU", "gpu": "", "torch_version": "2.13.0",
            "pykeops_version": "2.3", "ray_version": "2.60.0", "numpy_version": "2.3.0",
            "python_version": "3.12.0", "cxxflags": "", "started_at": started}
    for name, v in meta.items():
        columns[name] = [v] * rows
    if "synthetic" in SWEEP_SCHEMA.names:
        columns["synthetic"] = [True] * rows
    arrays = {f.name: pa.array(columns.get(f.name, [None] * rows), type=f.type) for f in SWEEP_SCHEMA}
    return pa.table(arrays, schema=SWEEP_SCHEMA)


def make_store(out: pathlib.Path, rows: int, rows_per_run: int = 600, rows_per_part: int = 8,
               seed: int = 0) -> int:
    """Write ``rows`` synthetic rows into the store at ``out``; returns the parts written."""
    store, rng, points = ResultStore(out), np.random.default_rng(seed), grid()
    parts = 0
    for run in range((rows + rows_per_run - 1) // rows_per_run):
        table = run_rows(points, run, min(rows_per_run, rows - run * rows_per_run), rng)
        for start in range(0, table.num_rows, rows_per_part):
            store.append_arrow(SWEEPS, table.slice(start, rows_per_part))
            parts += 1
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="rows to write (at least 1)")
    parser.add_argument("--out", required=True, help="results directory to write (created)")
    parser.add_argument("--rows-per-run", type=int, default=600)
    parser.add_argument("--rows-per-part", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("rows", "rows_per_run", "rows_per_part"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    start = time.perf_counter()
    parts = make_store(pathlib.Path(args.out), args.rows, args.rows_per_run, args.rows_per_part, args.seed)
    print(f"wrote {args.rows} synthetic rows in {parts} parts to {args.out} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
