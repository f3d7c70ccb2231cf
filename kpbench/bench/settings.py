"""The one option bag of a sweep: how each point is measured and how the sweep runs.

:class:`Settings` is checked once when it is made (a KPBenchError naming the field, the
value and what is allowed), travels whole to the workers (``measure.run_point`` reads its
measurement fields), is stored with the run (:meth:`Settings.row_meta`: the row columns
warmup, threads, timeout_s, memory_budget and, for speed, repeats) and is read back from
those columns by ``kpbench rerun`` (:meth:`Settings.from_row_meta`).

Where the values come from: a TOML ``[[sweep]]`` table (its measurement keys, see
:data:`MEASURE_KEYS`), its ``[run]`` table and the command line (:data:`RUN_KEYS`). None
of it changes a point's key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kpbench.bench import checks

HARD_TIMEOUT_GRACE_S = 60.0
MIN_SAMPLE_S = 0.010              # one timed sample lasts at least this long (asv: sample_time)
DEFAULT_THREADS = 1               # a point's threads unless told otherwise (one CPU per point)


@dataclass(frozen=True)
class Settings:
    """How to measure (read by measure, in the worker) and how to run (read by the orchestrator
    and the executors)."""

    # measurement
    repeats: int = 10
    warmup: int = 1
    memory_budget: int | None = None     # bytes for the dense pre-flight; None: the backend's own
    threads: int | None = None           # torch/OpenMP/BLAS threads; None: see point_threads
    min_sample_s: float = MIN_SAMPLE_S
    plugins: tuple = ()                  # kpbench plugins the worker loads (kpbench.plugins)
    timeout_s: float = 600.0
    # execution
    executor: str = "ray"
    out: str = "results"
    resume: bool = True
    retry_failed: bool = False           # with resume: measure again what failed here (retryable)
    wait: bool = False                   # another sweep writing into ``out``: wait (else StoreBusy)
    address: str | None = None           # Ray cluster address; None: "auto" if one runs, else local
    num_cpus: int | None = None          # local Ray cluster size (None: all cores)
    cpus_per_point: float = 1
    gpus_per_point: float = 1
    hard_grace_s: float = HARD_TIMEOUT_GRACE_S   # a point stuck past its timeout is killed after this
    flush_every: int = 8
    flush_s: float = 10.0
    progress: bool = True

    def __post_init__(self):
        checks.check_settings(dataclasses.asdict(self))
        object.__setattr__(self, "plugins", tuple(self.plugins))

    def point_threads(self) -> int:
        """The threads a point runs: ``threads``, else one per CPU it asks of Ray (the ONE default)."""
        return self.threads or max(DEFAULT_THREADS, int(self.cpus_per_point))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def measurement(self) -> dict:
        """The measurement fields (what an interleaved variant's worker, of any kpbench, takes)."""
        return {name: getattr(self, name) for name in WORKER_FIELDS}

    def row_meta(self, kind: str) -> dict:
        """The settings every row of the run stores (failed points too), so that rerun can
        read them back; repeats only for speed (the other kinds' rows store their own)."""
        meta = dict(warmup=self.warmup, threads=self.threads, timeout_s=self.timeout_s,
                    memory_budget=self.memory_budget)
        return {**meta, "repeats": self.repeats} if kind == "speed" else meta

    @classmethod
    def from_row_meta(cls, stored: dict, **execution) -> "Settings":
        """The inverse of :meth:`row_meta` (``stored``: one value per column, None where empty);
        each point asks Ray for as many CPUs as it runs threads (as the sweep's default)."""
        threads = int(stored["threads"])
        budget = stored.get("memory_budget")
        return cls(repeats=int(stored.get("repeats") or 1), warmup=int(stored["warmup"]),
                   threads=threads, cpus_per_point=float(threads), timeout_s=float(stored["timeout_s"]),
                   memory_budget=None if budget is None else int(budget), **execution)


FIELDS = tuple(f.name for f in dataclasses.fields(Settings))
# what measure.MeasureSettings had: the fields an interleaved worker of an older kpbench takes
WORKER_FIELDS = ("repeats", "warmup", "memory_budget", "threads", "min_sample_s", "plugins")
# the keys of a [[sweep]] table that are settings, not axes (they may differ between tables)
MEASURE_KEYS = ("repeats", "warmup", "timeout_s", "memory_budget")
# the keys of a [run] table and the execution flags
RUN_KEYS = tuple(name for name in FIELDS if name not in MEASURE_KEYS + ("min_sample_s", "plugins"))


def split_measure(values: dict) -> tuple[dict, dict]:
    """(the axes, the measurement settings) of a dict holding both, as a [[sweep]] table does."""
    return ({k: v for k, v in values.items() if k not in MEASURE_KEYS},
            {k: v for k, v in values.items() if k in MEASURE_KEYS})
