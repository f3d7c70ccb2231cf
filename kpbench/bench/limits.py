"""The limits of a sweep spec and of its settings (checked in :mod:`kpbench.bench.checks`;
imports nothing, so that ``--help`` can state them without loading the suite)."""

MAX_SIZE = 2**31 - 1          # N, M, D, iters: the CUDA kernels and KeOps index with 32-bit ints
SEED_LIMIT = 2**32            # numpy's seeds: 0 <= seed < 2**32
MAX_VALUES = 10_000           # values of one range expression
MAX_POINTS = 10_000           # points of one sweep
MAX_REPEATS = 10_000          # repeats, warmup
MAX_SECONDS = 7 * 24 * 3600   # timeouts
MAX_BYTES = 2**63 - 1         # memory_budget (an int64 column)
MAX_CPUS = 4096               # threads, cpus per point, a local cluster's CPUs
# the conditioning axes (accuracy sweeps): x -> scale * x + offset keeps the generated clouds
# (within a few units of the origin) finite in float32 (largest 3.4e38), blur * scale too
MAX_OFFSET = 1e30             # |offset|
MIN_SCALE, MAX_SCALE = 1e-30, 1e30

LIMITS_HELP = (f"limits: N, M, D, iters from 1 to {MAX_SIZE} (2**31-1); seeds from 0 to "
               f"{SEED_LIMIT - 1} (2**32-1); at most {MAX_VALUES} values per range and "
               f"{MAX_POINTS} points per sweep; |offset| at most {MAX_OFFSET:g}, scale from {MIN_SCALE:g} "
               f"to {MAX_SCALE:g}")
