"""Run a sweep: expand the spec, skip what is stored, execute, store rows as they finish.

Rows reach the store in small batches (every ``flush_every`` rows or ``flush_s``
seconds, and at the end), each batch one atomic Parquet part, so a sweep that is
interrupted or killed keeps every row it had flushed. With ``resume`` (the default)
points whose key is already stored are skipped, so a rerun finishes the sweep without
duplicating a row; ``retry_failed`` measures again the stored points whose status
depended on the machine or the moment (``retryable``: timeouts, errors, oom, a backend
unavailable here, a refusal by the free-memory budget); ``resume=False`` measures everything again (new rows, new run_id;
:func:`kpbench.results.store.latest_per_key` picks the newest).

This is the one orchestrator: ``kpbench sweep``, ``calibrate``, ``rerun`` and interleaved
sweeps (``variants``: one store per variant, OUT/<name>) all run through :func:`run_sweep`,
which expands the spec (:mod:`kpbench.bench.plan`), skips the stored keys, records the
run's metadata and environment, hands the points to an executor
(:mod:`kpbench.bench.executors`) with the :class:`~kpbench.bench.settings.Settings`, adds
the cost columns (:mod:`kpbench.bench.costs`) and stores the rows.

Nothing is measured before the spec, the settings and the results folder are checked
(:mod:`kpbench.bench.checks`: a KPBenchError, exit 2 from the CLI). A row the store
refuses (a value out of its column's range) never takes its batch down: the batch is
stored row by row, and that row as an ``error`` row of its point saying why.

One sweep at a time writes into a results folder (:mod:`kpbench.results.lock`): a second
one is refused naming the first's pid, or with ``wait`` waits and then skips what the
first stored.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from kpbench import plugins
from kpbench.errors import KPBenchError
from kpbench.results.lock import store_lock
from kpbench.results.meta import git_commit, record_environment, run_metadata
from kpbench.results.schema import POINT_COLUMNS
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench import costs, executors
from kpbench.bench.checks import check_writable
from kpbench.bench.measure import error_text
from kpbench.bench.plan import FAILED, SweepSpec, pending
from kpbench.bench.settings import Settings

NOT_RUN = ("skipped", "unsupported")


@dataclass
class SweepResult:
    kind: str
    run_id: str
    table_dir: str                       # the store's sweeps folder (interleaved: every variant's)
    total: int = 0
    already_stored: int = 0
    counts: dict = field(default_factory=dict)   # status -> n (interleaved: variant -> {status: n})
    seconds: float = 0.0
    variants: tuple = ()

    def summary(self) -> str:
        if self.variants:
            parts = "; ".join(f"{name}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                              for name, c in self.counts.items()) or "nothing run"
            return (f"interleaved sweep {self.kind}: {self.total} points x {len(self.variants)} variants "
                    f"({parts}), {self.already_stored} already stored, in {self.seconds:.1f} s -> "
                    f"{self.table_dir} (run_id {self.run_id})")
        ran = sum(self.counts.values())
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items())) or "nothing run"
        return (f"sweep {self.kind}: {self.total} points, {ran} run ({parts}), "
                f"{self.already_stored} already stored, in {self.seconds:.1f} s "
                f"-> {self.table_dir} (run_id {self.run_id})")


class RowRecorder:
    """Adds run metadata to rows and batches them into its store."""

    def __init__(self, store: ResultStore, meta: dict, flush_every: int, flush_s: float):
        self.store, self.meta = store, meta
        self.flush_every, self.flush_s = flush_every, flush_s
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, row: dict) -> None:
        with self.lock:
            self.buffer.append({**self.meta, **row})
            status = row["status"]
            self.counts[status] = self.counts.get(status, 0) + 1
            if len(self.buffer) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_s:
                self._flush()

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


# what the store raises for a row it cannot write (pyarrow's errors are ValueError/TypeError)
ROW_REFUSED = (KPBenchError, ValueError, TypeError, OverflowError)


def _progress_bar(total: int, label: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"sweep {label}", unit="pt", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def _postfix(counts: dict) -> str:
    ok = counts.get("ok", 0)
    failed = sum(counts.get(s, 0) for s in FAILED)
    skipped = sum(counts.get(s, 0) for s in NOT_RUN)
    return f"ok={ok} failed={failed} skipped={skipped}"


def _warn(message: str) -> None:
    print(f"kpbench sweep: {message}", file=sys.stderr)


def run_sweep(spec: SweepSpec, settings: Settings = Settings(), run_id: str | None = None,
              points: list | None = None, variants: list | None = None) -> SweepResult:
    """Measure every point of ``spec`` (or the given ``points``) not already stored; with
    ``variants`` (kpbench.bench.interleave.Variant) in every variant, interleaved, each into
    its store OUT/<name> (each store locked for the while, see kpbench.results.lock)."""
    if variants:
        from kpbench.bench.interleave import check_variants

        check_variants(spec.kind, variants)
    outs = {v.name: os.path.join(settings.out, v.name) for v in variants} if variants else {None: settings.out}
    with contextlib.ExitStack() as locks:
        for out in outs.values():
            check_writable(out, tables=())   # the lock's own file, before anything else
            locks.enter_context(store_lock(out, wait=settings.wait))
        for out in outs.values():            # every store locked: now its tables' folders
            check_writable(out)
        return _run_sweep(spec, settings, run_id, points, outs, variants)


def _run_sweep(spec, settings: Settings, run_id, points, outs: dict, variants) -> SweepResult:
    started = time.monotonic()
    # the threads every point runs and the plugins every worker loads, resolved once here
    settings = settings.replace(threads=settings.point_threads(),
                                plugins=settings.plugins or plugins.active())
    executor = "interleaved" if variants else settings.executor
    stores = {name: ResultStore(out) for name, out in outs.items()}
    points, todo = pending(spec, points, stores.values(), settings.retry_failed, settings.resume)
    checkouts = {v.name: v.path for v in variants or ()}
    run_id, recorders = _open_run(stores, spec.kind, settings, run_id, executor, checkouts)
    result = SweepResult(spec.kind, run_id, ", ".join(str(s.table_dir(SWEEPS)) for s in stores.values()),
                         total=len(points), already_stored=len(points) - len(todo),
                         variants=tuple(v.name for v in variants or ()))
    label = f"{spec.kind} x{len(stores)} interleaved" if variants else spec.kind
    bar = _progress_bar(len(todo) * len(stores), label) if settings.progress and todo else None
    try:
        if todo:
            annotate = costs.annotator(spec.kind, todo, warn=_warn)

            def on_row(row: dict, store=None) -> None:
                recorders[store].add(annotate(row))
                if bar is not None:
                    bar.set_postfix_str(_postfix(_total_counts(recorders)), refresh=False)
                    bar.update(1)

            run = executors.get(executor).run
            if variants:
                run = functools.partial(run, variants=variants)
            run(todo, spec.kind, settings, on_row,
                lambda row: recorders[None].add_final(annotate(row)))
    finally:
        for recorder in recorders.values():
            recorder.close()
        if bar is not None:
            bar.close()
        counts = {name: dict(r.counts) for name, r in recorders.items()}
        result.counts = counts if variants else counts[None]
        result.seconds = time.monotonic() - started
    return result


def _open_run(stores: dict, kind: str, settings: Settings, run_id, executor: str,
              checkouts: dict) -> tuple:
    """(the run_id, a RowRecorder per store), the run's environment recorded in each store;
    an interleaved variant's rows name the commit of its own checkout (``checkouts``)."""
    recorders = {}
    for name, store in stores.items():
        meta = run_metadata(run_id=run_id, sweep=kind, executor=executor)
        checkout = checkouts.get(name)
        if checkout:
            meta["git_commit"] = git_commit(checkout)
        # the settings in every row (failed points too; a measured row's own win), so that
        # ``kpbench rerun`` can recover them from the rows alone
        meta.update(settings.row_meta(kind))
        run_id = meta["run_id"]
        record_environment(store, run_id, checkout=checkout)
        recorders[name] = RowRecorder(store, meta, settings.flush_every, settings.flush_s)
    return run_id, recorders


def _total_counts(recorders: dict) -> dict:
    total: dict[str, int] = {}
    for recorder in recorders.values():
        for status, n in recorder.counts.items():
            total[status] = total.get(status, 0) + n
    return total
