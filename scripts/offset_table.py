"""Issue 23's offset table, measured by the sweep: float32 relative error at offsets 0, 1e2, 5e2, 1e4.

    python scripts/offset_table.py [--offsets 0,100,500,1e4] [--backends torch,keops,...] [--out DIR]

A thin caller of the sweep: it runs the conditioning [[sweep]] of the accuracy preset
(kpbench/bench/presets/accuracy.toml: the one with ``offsets``; Sinkhorn N=500, M=400, D=2,
blur .05, p=2, scaling .99 without and with tol 1e-6, and the Gaussian kernel product) with
the inline executor into --out (a second call resumes), then prints the report's table
(kpbench.results.tables.offset_table). The same numbers as
``kpbench sweep --config accuracy`` followed by ``kpbench report``.

Both clouds are moved by offset * (1, ..., 1); every input is rounded to float32 and the
float64 truth (kpbench.reference, converged) is computed on those same numbers, so the error
is the backend's arithmetic (and what its schedule leaves undone without tol), not the
rounding of the coordinates. "cuda" runs on a GPU where there is one, otherwise by host
execution of the same kernels (KPBENCH_CUDA_HOST=1, set here; the table says so).
"""
from __future__ import annotations

import argparse
import os
import sys

from kpbench.backends import availability
from kpbench.errors import KPBenchError
from kpbench.results.selection import sweep_frame
from kpbench.results.tables import offset_table
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.sweep import load_config


def conditioning_table() -> dict:
    """The accuracy preset's [[sweep]] table with offsets."""
    tables, _run = load_config("accuracy")
    return next(table for table in tables if "offsets" in table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", help="comma list (default: the preset's)")
    parser.add_argument("--backends", help="comma list (default: the preset's)")
    parser.add_argument("--out", default="results-offsets", help="results folder (default results-offsets)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not availability()["cuda"][0]:
        os.environ.setdefault("KPBENCH_CUDA_HOST", "1")
    overrides = {name: value for name, value in (("offsets", args.offsets), ("backends", args.backends))
                 if value is not None}
    try:
        spec, measured = sweep_from_dict({**conditioning_table(), **overrides}, where="offset_table")
        result = run_sweep(spec, Settings(executor="inline", out=args.out, progress=False,
                                          threads=args.threads, **measured))
    except KPBenchError as exc:
        print(f"offset_table: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    header, rows = offset_table(sweep_frame(args.out))
    print("\t".join(header))
    for row in rows:
        print("\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
