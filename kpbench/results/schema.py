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
    pa.field("kernel", pa.string()),      # kernel name (kernel ops), the op's family (softmin, sinkhorn);
                                          # null for flow_step (its loss is in ``loss``)
    pa.field("N", pa.int64()),
    pa.field("M", pa.int64()),
    pa.field("D", pa.int64()),
    pa.field("blur", pa.float64()),
    pa.field("p", pa.int64()),
    pa.field("reach", pa.float64()),      # null = balanced
    pa.field("dtype", pa.string()),       # float32 | float64
    pa.field("device", pa.string()),      # cpu | cuda
    pa.field("seed", pa.int64()),
    pa.field("iters", pa.int64()),        # fixed Sinkhorn iteration count; null = the eps-scaling schedule (iterations: how many)
    pa.field("scaling", pa.float64()),    # eps-scaling factor; null where irrelevant
    # Sinkhorn, after the eps-scaling schedule: iterate at the final eps until the potentials
    # move less than tol (at most 1000 iterations; `converged` says which stopped it);
    # null = no tolerance phase. In the key only when set (older keys stay valid).
    pa.field("tol", pa.float64()),
    # accuracy sweeps, conditioning: the clouds x, y become scale * x + offset * (1, ..., 1) and
    # blur, reach scale * blur, scale * reach (the same problem, moved and magnified; the blur,
    # reach and eps columns keep the unscaled values), all inputs rounded to dtype; null = not
    # moved (in the key only when set, like tol). Accuracy sweeps only.
    pa.field("offset", pa.float64()),
    pa.field("scale", pa.float64()),
    # the data source (kpbench.datasets.sources: a name or file:PATH); null = the default
    # pair (x uniform cube, y Gaussian blobs). In the key only when set.
    pa.field("data", pa.string()),
    # the loss of a loss op (flow_step); its kernel is null. Rows stored before this column held
    # the loss in ``kernel``: read them with split_loss. Never in the key (see point_key).
    pa.field("loss", pa.string()),
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
    # -- timing detail (see kpbench.bench.measure) --
    pa.field("time_q1_s", pa.float64()),          # first quartile of the per-call sample times
    pa.field("time_q3_s", pa.float64()),          # third quartile
    pa.field("time_samples_s", pa.list_(pa.float64())),   # per-call time of every sample
    pa.field("number", pa.int64()),               # calls per timed sample (calibrated, like timeit)
    pa.field("warmup", pa.int64()),               # untimed calls after the first
    pa.field("timer", pa.string()),               # perf_counter | cuda_events
    # -- threads and placement --
    pa.field("threads", pa.int64()),              # torch intra-op threads
    pa.field("omp_threads", pa.int64()),          # OpenMP threads (KeOps CPU)
    pa.field("blas_threads", pa.int64()),         # BLAS threads (NumPy)
    pa.field("cpu_affinity", pa.string()),        # CPUs the process may run on, e.g. "0-1"
    pa.field("node", pa.string()),                # Ray node id (or host) that ran the point
    pa.field("node_ip", pa.string()),
    pa.field("gpu_ids", pa.string()),             # GPU ids Ray assigned ("" = none)
    pa.field("point_started_at", pa.timestamp("us", tz="UTC")),
    pa.field("point_ended_at", pa.timestamp("us", tz="UTC")),
    # -- what was solved, how well --
    pa.field("marginal_err", pa.float64()),       # Sinkhorn: |pi 1 - a|_1 + |pi^T 1 - b|_1
    pa.field("converged", pa.bool_()),            # Sinkhorn tol runs: stopped by tol (not max_iter)
    pa.field("grad_fd_rel_err", pa.float64()),    # gradient vs central finite differences
    pa.field("truth_converged", pa.bool_()),      # accuracy: did the float64 truth rel_err is
    pa.field("truth_marginal_err", pa.float64()), #   taken against converge, and how far
    pa.field("input_hash", pa.string()),          # short hash of the generated inputs (after cast)
    pa.field("deterministic", pa.bool_()),        # bit-reproducible across runs on this machine
    pa.field("backend_settings", pa.string()),    # JSON: backend/peer-specific settings used
    pa.field("timeout_s", pa.float64()),          # the spec's per-point timeout
    pa.field("memory_budget", pa.int64()),        # the spec's dense memory budget (null: backend's)
    pa.field("retryable", pa.bool_()),            # the status depends on this machine or moment
                                                  # (timeout, error, oom, backend unavailable here,
                                                  # skipped by free memory): --retry-failed redoes it
    pa.field("interleave_id", pa.string()),       # interleaved sweep: the session shared by the
                                                  # variants whose samples alternated (compare pairs them)
    pa.field("interleave_variants", pa.string()), # the variants of that session, comma-separated
    # -- the machine's limit (speed rows; kpbench.bench.costs) --
    pa.field("limit_s", pa.float64()),            # the least time the machine's rates allow for the point
    pa.field("limit_frac", pa.float64()),         # limit_s / time_median_s (1 = at the limit)
    pa.field("limit_source", pa.string()),        # "measured cpu" | "device table H100" ...
    # -- where the data came from (kpbench.datasets.sources) --
    pa.field("data_hash", pa.string()),           # file: sources: sha256 of the file's bytes (16 hex digits)
    pa.field("data_size_bytes", pa.int64()),      # file: sources: the file's size
    pa.field("data_replaced", pa.bool_()),        # a cloud was sampled with replacement (too few points)
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
    pa.field("synthetic", pa.bool_()),            # made up by scripts/make_store.py (scale tests): no measurement
]

SWEEP_SCHEMA = pa.schema(POINT_FIELDS + RESULT_FIELDS + META_FIELDS)
POINT_COLUMNS = [f.name for f in POINT_FIELDS]
COLUMNS = SWEEP_SCHEMA.names


# ops whose ``kernel`` column held their loss before the ``loss`` column (rows stored before it)
LOSS_OPS = ("flow_step",)


def split_loss(op, kernel, loss) -> tuple:
    """(kernel, loss) of a stored row: a loss op's row from before the ``loss`` column (loss
    null, the loss in ``kernel``) reads as (None, that loss); other rows as they are."""
    if op in LOSS_OPS and (loss is None or loss != loss):   # loss != loss: NaN from pandas
        return None, kernel
    return kernel, loss
