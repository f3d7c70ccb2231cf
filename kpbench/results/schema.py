"""The Parquet row of a sweep point: the point, what happened, what was measured, where.

One schema, used by the store (writing), the report and compare (reading), the asv
benchmarks and the tests. Add columns at the end; never rename one.
"""
from __future__ import annotations

import pyarrow as pa

STATUSES = ("ok", "oom", "timeout", "unsupported", "skipped", "error")

# The sweep point. Together these make the row's key (see point_key).
POINT_FIELDS = [
    pa.field("op", pa.string()),          # kernel_product | kernel_product_grad | softmin | sinkhorn | sinkhorn_grad | flow_step ...
    pa.field("backend", pa.string()),     # numpy | torch | keops | cuda
    pa.field("kernel", pa.string()),      # kernel name, or the loss name for loss ops
    pa.field("N", pa.int64()),
    pa.field("M", pa.int64()),
    pa.field("D", pa.int64()),
    pa.field("blur", pa.float64()),
    pa.field("p", pa.int64()),
    pa.field("reach", pa.float64()),      # null = balanced
    pa.field("dtype", pa.string()),       # float32 | float64
    pa.field("device", pa.string()),      # cpu | cuda
    pa.field("seed", pa.int64()),
    pa.field("iters", pa.int64()),        # fixed Sinkhorn iteration count; null = eps-scaling to convergence
    pa.field("scaling", pa.float64()),    # eps-scaling factor; null where irrelevant
]

RESULT_FIELDS = [
    pa.field("key", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("eps", pa.float64()),                # blur**p for softmin/Sinkhorn ops
    pa.field("time_median_s", pa.float64()),
    pa.field("time_min_s", pa.float64()),
    pa.field("time_iqr_s", pa.float64()),
    pa.field("repeats", pa.int64()),
    pa.field("first_call_s", pa.float64()),       # first call (compilation, caches) timed apart
    pa.field("peak_mem_bytes", pa.int64()),
    pa.field("mem_method", pa.string()),          # cuda_max_allocated | rss_delta | estimate
    pa.field("mem_estimate_bytes", pa.int64()),   # pre-flight estimate for dense backends
    pa.field("rel_err", pa.float64()),            # vs the float64 numpy reference, same inputs
    pa.field("rel_err_exact", pa.float64()),      # Sinkhorn vs exact OT (small N=M only)
    pa.field("value", pa.float64()),              # a scalar summary of the output (e.g. the loss)
    pa.field("iterations", pa.int64()),           # Sinkhorn iterations actually run
]

META_FIELDS = [
    pa.field("run_id", pa.string()),
    pa.field("sweep", pa.string()),               # speed | memory | accuracy | flow | ...
    pa.field("executor", pa.string()),            # inline | ray
    pa.field("git_commit", pa.string()),
    pa.field("host", pa.string()),
    pa.field("cpu", pa.string()),
    pa.field("gpu", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("pykeops_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("numpy_version", pa.string()),
    pa.field("python_version", pa.string()),
    pa.field("cxxflags", pa.string()),            # compiler flags KeOps/CUDA were built with
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
]

SWEEP_SCHEMA = pa.schema(POINT_FIELDS + RESULT_FIELDS + META_FIELDS)
POINT_COLUMNS = [f.name for f in POINT_FIELDS]
COLUMNS = SWEEP_SCHEMA.names
