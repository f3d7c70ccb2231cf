"""Run a sweep: expand the spec, skip what is stored, execute, store rows as they finish.

Rows reach the store in small batches (every ``flush_every`` rows or ``flush_s``
seconds, and at the end), each batch one atomic Parquet part, so a sweep that is
interrupted or killed keeps every row it had flushed. With ``resume`` (the default)
points whose key is already stored are skipped, so a rerun finishes the sweep without
duplicating a row; ``retry_failed`` measures again the stored points whose status
depended on the machine or the moment (``retryable``: timeouts, errors, oom, a backend
unavailable here, a refusal by the free-memory budget); ``resume=False`` measures everything again (new rows, new run_id;
:func:`kpbench.results.store.latest_per_key` picks the newest).

Nothing is measured before the spec, the run options and the results folder are checked
(:mod:`kpbench.bench.spec`: a KPBenchError, exit 2 from the CLI). A row the store
refuses (a value out of its column's range) never takes its batch down: the batch is
stored row by row, and that row as an ``error`` row of its point saying why.

One sweep at a time writes into a results folder (:mod:`kpbench.results.lock`): a second
one is refused naming the first's pid, or with ``wait`` waits and then skips what the
first stored.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from dataclasses import dataclass, field

from kpbench import plugins
from kpbench.errors import KPBenchError
from kpbench.results.lock import store_lock
from kpbench.results.meta import record_environment, run_metadata
from kpbench.results.schema import POINT_COLUMNS
from kpbench.results.store import SWEEPS, ResultStore, latest_per_key
from kpbench.bench import costs
from kpbench.bench.executors import HARD_TIMEOUT_GRACE_S, ExecutorOptions, run_points
from kpbench.bench.measure import MeasureSettings, error_text
from kpbench.bench.spec import SweepSpec, check_run_options, check_writable, expand

FAILED = ("error", "timeout", "oom")
NOT_RUN = ("skipped", "unsupported")


@dataclass
class RunOptions:
    """Where and how a sweep runs (none of it changes what a point measures)."""

    executor: str = "ray"
    out: str = "results"
    resume: bool = True
    retry_failed: bool = False           # with resume: measure again what failed here (retryable)
    wait: bool = False                   # another sweep writing into ``out``: wait (else StoreBusy)
    address: str | None = None
    num_cpus: int | None = None          # local Ray cluster size (None: all cores)
    cpus_per_point: float = 1
    gpus_per_point: float = 1
    threads: int | None = None           # torch threads per point (None: cpus_per_point)
    hard_grace_s: float = HARD_TIMEOUT_GRACE_S   # a point stuck past its timeout is killed after this
    flush_every: int = 8
    flush_s: float = 10.0
    progress: bool = True

    def __post_init__(self):
        check_run_options(dataclasses.asdict(self))


@dataclass
class SweepResult:
    kind: str
    run_id: str
    table_dir: str
    total: int = 0
    already_stored: int = 0
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        ran = sum(self.counts.values())
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items())) or "nothing run"
        return (f"sweep {self.kind}: {self.total} points, {ran} run ({parts}), "
                f"{self.already_stored} already stored, in {self.seconds:.1f} s "
                f"-> {self.table_dir} (run_id {self.run_id})")


class RowRecorder:
    """Adds run metadata to rows, batches them into the store, drives the progress bar."""

    def __init__(self, store: ResultStore, meta: dict, total: int, kind: str,
                 flush_every: int, flush_s: float, progress: bool):
        self.store, self.meta = store, meta
        self.flush_every, self.flush_s = flush_every, flush_s
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.bar = _progress_bar(total, kind) if progress else None

    def add(self, row: dict) -> None:
        with self.lock:
            self.buffer.append({**self.meta, **row})
            status = row["status"]
            self.counts[status] = self.counts.get(status, 0) + 1
            if len(self.buffer) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_s:
                self._flush()
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(), refresh=False)
            self.bar.update(1)

    def add_final(self, row: dict) -> None:
        """Store ``row`` and everything buffered now (the inline watchdog, before exiting)."""
        if self.lock.acquire(timeout=5):
            try:
                self.buffer.append({**self.meta, **row})
                self._flush()
            finally:
                self.lock.release()
        else:   # the main thread holds the lock: store this row alone
            self._store([{**self.meta, **row}])

    def close(self) -> None:
        with self.lock:
            self._flush()
        if self.bar is not None:
            self.bar.close()

    def _flush(self) -> None:
        rows, self.buffer = self.buffer, []
        self.last_flush = time.monotonic()
        if rows:
            self._store(rows)

    def _store(self, rows: list[dict]) -> None:
        """``rows`` as one part; if the store refuses it, row by row, a refused row as the
        error row of its point. A folder that takes no file is a KPBenchError naming it."""
        try:
            self._store_row_by_row_if_refused(rows)
        except OSError as exc:
            raise KPBenchError(f"cannot write to {self.store.table_dir(SWEEPS)} ({exc}): "
                               f"{len(rows)} measured row(s) were not stored") from exc

    def _store_row_by_row_if_refused(self, rows: list[dict]) -> None:
        try:
            return self.store.append(SWEEPS, rows)
        except ROW_REFUSED:
            pass
        unstored = []
        for row in rows:
            try:
                self.store.append(SWEEPS, [row])
            except ROW_REFUSED as exc:
                try:
                    self.store.append(SWEEPS, [self.unstorable(row, exc)])
                except ROW_REFUSED as again:
                    unstored.append(f"{row.get('key')} ({again})")
                    continue
                if self.counts.get(row.get("status")):   # the summary counts what was stored
                    self.counts[row["status"]] -= 1
                    self.counts["error"] = self.counts.get("error", 0) + 1
        if unstored:
            raise KPBenchError(f"{len(unstored)} row(s) could not be stored, even reduced to "
                               f"their points: {'; '.join(unstored)}")

    def unstorable(self, row: dict, exc: BaseException) -> dict:
        """The error row of a point whose measured row the store refused: the point, the run
        metadata, and in ``error`` why (with the measurement's own status and error)."""
        kept = {name: row[name] for name in (*self.meta, *POINT_COLUMNS, "key", "eps") if name in row}
        was = f"; it was {row.get('status')}" + (f": {row['error']}" if row.get("error") else "")
        kept.update(status="error", retryable=True,
                    error=f"measured, but the row could not be stored: {error_text(exc)}{was}")
        return kept

    def _postfix(self) -> str:
        ok = self.counts.get("ok", 0)
        failed = sum(self.counts.get(s, 0) for s in FAILED)
        skipped = sum(self.counts.get(s, 0) for s in NOT_RUN)
        return f"ok={ok} failed={failed} skipped={skipped}"


# what the store raises for a row it cannot write (pyarrow's errors are ValueError/TypeError)
ROW_REFUSED = (KPBenchError, ValueError, TypeError, OverflowError)


def _progress_bar(total: int, kind: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"sweep {kind}", unit="pt", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def done_keys(store: ResultStore, retry_failed: bool = False) -> set[str]:
    """Keys a resumed sweep skips: every stored key, or with ``retry_failed`` those whose
    latest row is not ``retryable`` (rows from before that column: failed = retryable)."""
    if not retry_failed:
        return store.keys(SWEEPS)
    rows = store.read(SWEEPS, columns=["key", "status", "retryable", "started_at"])
    if rows.empty:
        return set()
    rows = latest_per_key(rows)
    retry = rows["retryable"].astype("boolean").fillna(rows["status"].isin(FAILED))
    return set(rows.loc[~retry.astype(bool), "key"])


def _warn(message: str) -> None:
    print(f"kpbench sweep: {message}", file=sys.stderr)


def run_sweep(spec: SweepSpec, options: RunOptions = RunOptions(), run_id: str | None = None,
              points: list | None = None) -> SweepResult:
    """Measure every point of ``spec`` (or the given ``points``) not already stored."""
    check_writable(options.out, tables=())   # the lock's own file, before anything else
    with store_lock(options.out, wait=options.wait):
        check_writable(options.out)
        return _run_sweep(spec, options, run_id, points)


def _run_sweep(spec, options, run_id, points) -> SweepResult:
    started = time.monotonic()
    store = ResultStore(options.out)
    points = expand(spec) if points is None else points
    stored = done_keys(store, options.retry_failed) if options.resume else set()
    todo = [p for p in points if p.key(spec.kind) not in stored]
    meta = run_metadata(run_id=run_id, sweep=spec.kind, executor=options.executor)
    record_environment(store, meta["run_id"])
    result = SweepResult(spec.kind, meta["run_id"], str(store.table_dir(SWEEPS)),
                         total=len(points), already_stored=len(points) - len(todo))
    recorder = RowRecorder(store, meta, len(todo), spec.kind, options.flush_every,
                           options.flush_s, options.progress)
    settings = MeasureSettings(
        repeats=spec.repeats, warmup=spec.warmup, memory_budget=spec.memory_budget,
        threads=options.threads or max(1, int(options.cpus_per_point)),
        plugins=plugins.active(),
    )
    # the spec's settings in every row (failed points too; a measured row's own win),
    # so that ``kpbench rerun`` can recover them from the rows alone
    meta.update(warmup=spec.warmup, threads=settings.threads, timeout_s=spec.timeout_s,
                memory_budget=spec.memory_budget, **({"repeats": spec.repeats} if spec.kind == "speed" else {}))
    executor_options = ExecutorOptions(
        timeout_s=spec.timeout_s, cpus_per_point=options.cpus_per_point,
        gpus_per_point=options.gpus_per_point, address=options.address, num_cpus=options.num_cpus,
        hard_grace_s=options.hard_grace_s,
    )
    try:
        if todo:
            annotate = costs.annotator(spec.kind, todo, warn=_warn)
            run_points(options.executor, todo, spec.kind, settings, executor_options,
                       lambda row: recorder.add(annotate(row)),
                       lambda row: recorder.add_final(annotate(row)))
    finally:
        recorder.close()
        result.counts = dict(recorder.counts)
        result.seconds = time.monotonic() - started
    return result
