"""The dense peers' memory estimates against their measured peak RSS growth.

Each (peer, op) point runs in a fresh process (``kpbench.bench.measure.run_point`` in
"memory" mode: the resident high-water mark reset, one call measured), float32, N = M,
and prints the peak, the estimate and their ratio in N x M buffers; exits 1 if a peak
exceeds its estimate. Slow (POT iterates on the dense matrices): a script, not a test.

    python scripts/peer_memory.py [N ...]        (default: 1000 1500)
"""
from __future__ import annotations

import json
import subprocess
import sys

POINTS = [("geomloss-tensorized", "sinkhorn", None), ("geomloss-tensorized", "sinkhorn_grad", None),
          ("pot", "sinkhorn", 20), ("pot", "sinkhorn_grad", 20)]   # POT: 20 iterations suffice

CHILD = """
import json, sys
from kpbench.bench.measure import run_point
from kpbench.bench.settings import Settings
from kpbench.bench.plan import Point
backend, op, n, iters = json.loads(sys.argv[1])
point = Point(op=op, backend=backend, kernel="sinkhorn", N=n, M=n, D=3, blur=0.05, p=2,
              reach=None, dtype="float32", device="cpu", seed=0, iters=iters, scaling=0.5)
row = run_point(point, "memory", Settings(repeats=1, warmup=1))
print(json.dumps({k: row.get(k) for k in ("status", "error", "peak_mem_bytes",
                                          "mem_estimate_bytes", "mem_method")}))
"""


def measure(backend: str, op: str, n: int, iters) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([backend, op, n, iters])],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(sizes: list[int]) -> int:
    failed = False
    print(f"{'peer':22s} {'op':14s} {'N':>6s} {'peak MB':>9s} {'est. MB':>9s} "
          f"{'peak/NM':>8s} {'est./NM':>8s}")
    for n in sizes:
        for backend, op, iters in POINTS:
            row = measure(backend, op, n, iters)
            if row["status"] != "ok" or row["mem_method"] != "rss_delta":
                print(f"{backend:22s} {op:14s} {n:6d} {row['status']}: {row['error']}")
                failed = True
                continue
            peak, estimate, unit = row["peak_mem_bytes"], row["mem_estimate_bytes"], n * n * 4
            failed |= peak > estimate
            print(f"{backend:22s} {op:14s} {n:6d} {peak / 1e6:9.1f} {estimate / 1e6:9.1f} "
                  f"{peak / unit:8.1f} {estimate / unit:8.1f}" + ("  OVER" if peak > estimate else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [1000, 1500]))
