"""Data selection: which sweep rows a report or a comparison looks at, grouped how.

``load_sweeps`` reads a store (or a Parquet file), ``select_run`` keeps one run (or all,
latest row per point key), ``with_config`` tags each row with its configuration and
``cells`` summarises each (op, configuration, backend, N) over seeds and sweep kinds.
Speed-ups are computed only between cells of the same op, configuration (dtype and
device included) and N, against a baseline backend the caller picks.
"""
from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kpbench.errors import KPBenchError
from kpbench.results.format import (CONFIG_COLUMNS, iterations_text, missing, number, row_config,
                                    setting_label, value)
from kpbench.results.schema import COLUMNS
from kpbench.results.store import READ_ERRORS, SWEEPS, ResultStore, latest_per_key, printable

# The dense backend: the one a user has without installing anything else.
DEFAULT_BASELINE = "torch"
# errors are measured against this float64 backend: its own error is 0 by definition
REFERENCE_BACKEND = "numpy"


def load_sweeps(path: str | os.PathLike, columns: list[str] | None = None,
                runs: set[str] | None = None) -> pd.DataFrame:
    """Sweep rows from a results dir (with ``sweeps/``), a sweeps dir, or one Parquet file.

    All rows of every run (see :func:`select_run`), or of the ``runs`` given; the schema's
    ``columns`` (all when None; one absent from the files is read as nulls). From a store,
    only those are read (see :meth:`ResultStore.read`).
    """
    path = pathlib.Path(path)
    wanted = COLUMNS if columns is None else [c for c in COLUMNS if c in set(columns)]
    if not path.exists():
        raise KPBenchError(f"no results at {path}: the path does not exist")
    if (path / SWEEPS).is_dir():
        frame = ResultStore(path).read(SWEEPS, columns=columns, runs=runs)
    elif path.is_dir() and path.name == SWEEPS:
        frame = ResultStore(path.parent).read(SWEEPS, columns=columns, runs=runs)
    elif (path.is_dir() and any(path.glob("*.parquet"))) or (path.is_file() and path.suffix == ".parquet"):
        frame = _read_parquet(path)
        if runs is not None and "run_id" in frame:
            frame = frame[frame["run_id"].isin(runs)]
    elif path.is_dir():
        frame = pd.DataFrame(columns=wanted)
    else:
        raise KPBenchError(f"{path} is neither a results directory nor a Parquet file")
    for column in wanted:
        if column not in frame:
            frame[column] = None
    return frame if columns is None else frame[[c for c in frame.columns if c in set(wanted)]]


def load_run(path: str | os.PathLike, run_id: str | None, columns: list[str] | None = None
             ) -> pd.DataFrame:
    """``select_run(load_sweeps(path), run_id)``, reading only what it needs: the run ids
    and start times of every row first, then the rows of the one run asked (``columns``)."""
    if run_id is None:
        return select_run(load_sweeps(path, columns), None)
    ids = load_sweeps(path, columns=["run_id", "started_at"])
    if ids.empty:
        raise KPBenchError(f"no run {run_id!r}: there are no sweep rows")
    run = _find_run(ids, run_id)
    return select_run(load_sweeps(path, columns, runs={run}), run)


def _read_parquet(path: pathlib.Path) -> pd.DataFrame:
    """Parquet given by name (not a store): unreadable is an error, there is nothing to skip to."""
    try:
        return pd.read_parquet(path)
    except READ_ERRORS as exc:
        raise KPBenchError(f"cannot read {printable(str(path))} as Parquet: {printable(str(exc))}") from exc


def select_run(frame: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    """Rows of one run (``run_id`` exact or a unique prefix; "latest" = the last started run),
    or with ``None`` all runs; then one row per point key, the latest winning."""
    if run_id is not None and frame.empty:
        raise KPBenchError(f"no run {run_id!r}: there are no sweep rows")
    if run_id is not None:
        frame = frame[frame["run_id"] == _find_run(frame, run_id)]
    return latest_per_key(frame).reset_index(drop=True)


def _find_run(frame: pd.DataFrame, run_id: str) -> str:
    runs = runs_in_order(frame)
    if run_id == "latest":
        return runs[-1]
    matches = [r for r in runs if r == run_id] or [r for r in runs if r.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else "an ambiguous run id prefix"
        raise KPBenchError(f"{what} {run_id!r} in these results; runs: {', '.join(runs) or 'none'}")
    return matches[0]


def runs_in_order(frame: pd.DataFrame) -> list[str]:
    started = frame.groupby("run_id", dropna=True)["started_at"].min().sort_values(kind="stable")
    return [str(r) for r in started.index]


def load_table(results_dir: pathlib.Path, table: str) -> pd.DataFrame:
    return ResultStore(results_dir).read(table)


def with_config(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``config`` (a hashable tuple of CONFIG_COLUMNS values, nulls as None), computed
    once per distinct combination of the columns it comes from (a store repeats few)."""
    frame = frame.copy()
    sources = [c for c in CONFIG_COLUMNS if c != "M_rel"] + ["N", "M", "op"]   # op: see row_config
    present = frame.reindex(columns=sources)
    groups = present.groupby(sources, dropna=False, sort=False).ngroup().to_numpy()
    firsts = present.iloc[pd.Series(range(len(present))).groupby(groups).first().to_numpy()] \
        if len(present) else present
    configs = [tuple(row_config(r)[c] for c in CONFIG_COLUMNS) for r in firsts.to_dict("records")]
    frame["config"] = pd.Series([configs[g] for g in groups], index=frame.index, dtype=object)
    return frame


def config_dict(config: tuple) -> dict:
    return dict(zip(CONFIG_COLUMNS, config))


@dataclass
class Cell:
    """What happened at one (op, config, backend, N), over seeds and sweep kinds."""
    status: str
    time: float | None = None
    iqr: float | None = None         # inter-quartile range of the per-call samples
    first: float | None = None       # the first call (compilation, caches), timed apart
    mem: float | None = None
    err: float | None = None
    grad_fd: float | None = None     # gradient vs finite differences of the converged value
    iterations: str | None = None    # Sinkhorn: how many iterations ran, and if a cap stopped them
    speedup: float | None = None     # baseline time / this time, same op, config and N
    limit: float | None = None       # median limit_frac: the machine's limit / the time
    error: str | None = None         # an error message of a failed row


CELL_KEYS = ["op", "config", "backend", "N"]


def cells(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> dict[tuple, Cell]:
    """(op, config, backend, N) -> Cell: median time, max memory and error of the ok rows,
    and the speed-up over ``baseline`` in the same op, config (dtype, device) and N (none for
    the baseline itself). Computed column-wise, per group: no per-row Python."""
    frame = frame if "config" in frame else with_config(frame)
    frame = frame.dropna(subset=["op", "backend", "N"])
    if frame.empty:
        return {}
    result = {key: _failed_cell(status, error) for key, status, error in _failed_groups(frame)}
    ok = frame[frame["status"] == "ok"]
    if not ok.empty:
        for key, cell in _ok_cells(ok).items():
            result[key] = cell
    order = frame.groupby(CELL_KEYS, sort=False).size().index       # first appearance, as before
    result = {key: result[key] for key in order if key in result}
    for (op, config, backend, n), cell in result.items():
        base = result.get((op, config, baseline, n))
        if backend != baseline and base is not None and base.time and cell.time:
            cell.speedup = base.time / cell.time
    return result


def _ok_cells(ok: pd.DataFrame) -> dict[tuple, Cell]:
    numbers = pd.DataFrame({c: pd.to_numeric(ok[c], errors="coerce") for c in
                            ("time_median_s", "time_iqr_s", "peak_mem_bytes", "rel_err",
                             "grad_fd_rel_err", "iterations")}, index=ok.index)
    # rows stored before the limits came have no limit_frac: a missing column reads as nulls
    numbers["limit_frac"] = pd.to_numeric(ok["limit_frac"], errors="coerce") if "limit_frac" in ok else np.nan
    numbers["first_call_s"] = pd.to_numeric(ok["first_call_s"], errors="coerce").where(ok["sweep"] == "speed")
    numbers["capped"] = ok["converged"].map(lambda v: not missing(v) and not bool(v))
    grouped = numbers.groupby([ok[k] for k in CELL_KEYS], sort=False)
    stats = grouped.agg(time=("time_median_s", "median"), iqr=("time_iqr_s", "median"),
                        first=("first_call_s", "median"), mem=("peak_mem_bytes", "max"),
                        err=("rel_err", "max"), grad_fd=("grad_fd_rel_err", "max"),
                        lo=("iterations", "min"), hi=("iterations", "max"), capped=("capped", "any"),
                        limit=("limit_frac", "median"))
    return {key: Cell(status="ok", time=value(r.time), iqr=value(r.iqr), first=value(r.first),
                      mem=value(r.mem), err=value(r.err), grad_fd=value(r.grad_fd),
                      iterations=_iterations(r.lo, r.hi, r.capped), limit=value(r.limit))
            for key, r in zip(stats.index, stats.itertuples(index=False))}


def _iterations(lo, hi, capped) -> str | None:
    """format.iterations_text from a group's min, max and 'a cap stopped one'."""
    if missing(lo):
        return None
    return iterations_text([int(lo), int(hi)], [False] if capped else [])


def _failed_groups(frame: pd.DataFrame):
    """(key, most frequent status (the first in order on a tie), first error) per group."""
    counts = frame.groupby(CELL_KEYS + ["status"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["n", "status"], ascending=[False, True], kind="stable")
    modes = counts.drop_duplicates(CELL_KEYS).set_index(CELL_KEYS)["status"]
    errors = frame.dropna(subset=["error"]).groupby(CELL_KEYS, sort=False)["error"].first().to_dict()
    for key, status in modes.items():
        yield key, status, errors.get(key)


def _failed_cell(status, error) -> Cell:
    return Cell(status=status, error=None if error is None else str(error))


def samples(row: dict) -> list[float]:
    """The per-call sample times of a row (finite ones; [] when none were stored)."""
    raw = row.get("time_samples_s")
    if raw is None or (not isinstance(raw, (list, tuple, np.ndarray))):
        return []
    return [float(s) for s in raw if s is not None and math.isfinite(float(s))]


def quartiles(row: dict) -> tuple[float, float] | None:
    """[q1, q3] of a row's times: the stored quartiles, else from the samples, else
    median -+ IQR/2; None when the row records no spread."""
    q1, q3 = number(row.get("time_q1_s")), number(row.get("time_q3_s"))
    if q1 is not None and q3 is not None:
        return q1, q3
    times = samples(row)
    if len(times) >= 2:
        low, high = np.percentile(times, [25, 75])
        return float(low), float(high)
    median, iqr = number(row.get("time_median_s")), number(row.get("time_iqr_s"))
    if median is not None and iqr is not None:
        return median - iqr / 2, median + iqr / 2
    return None


def offset_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """The largest relative error (over N and seeds) per op, setting, backend, dtype, device
    and offset, for the ops whose ok rows were measured at two offsets or more (the
    reference backend, the truth itself, left out). ``setting`` names the configuration
    fields that take several values within the op (e.g. 'tol=none' / 'tol=1e-06': a Sinkhorn
    error with and without its tolerance phase are not maxed together). Columns: op,
    setting, backend, dtype, device, offset, rel_err, rows (how many rows the maximum is
    over). The cuda backend on device cpu is its host execution (KPBENCH_CUDA_HOST=1)."""
    columns = ["op", "setting", "backend", "dtype", "device", "offset", "rel_err", "rows"]
    if "offset" not in frame or frame.empty:
        return pd.DataFrame(columns=columns)
    data = frame.assign(rel_err=pd.to_numeric(frame["rel_err"], errors="coerce"),
                        offset=pd.to_numeric(frame["offset"], errors="coerce"))
    data = data[(data["status"] == "ok") & data["rel_err"].notna() & data["offset"].notna()
                & (data["backend"] != REFERENCE_BACKEND)]
    data = data[data.groupby("op")["offset"].transform("nunique") > 1]
    if data.empty:
        return pd.DataFrame(columns=columns)
    data = data.assign(setting=_setting_labels(data))
    grouped = data.groupby(["op", "setting", "backend", "dtype", "device", "offset"])["rel_err"]
    return grouped.agg(rel_err="max", rows="size").reset_index()[columns]


def _setting_labels(data: pd.DataFrame) -> list[str]:
    """Per row, its configuration fields that vary within its op (offset, dtype, device apart)."""
    configs = [row_config(row) for row in data.to_dict("records")]
    seen: dict[str, dict[str, set]] = {}
    for op, config in zip(data["op"], configs):
        for name, v in config.items():
            seen.setdefault(op, {}).setdefault(name, set()).add(v)
    varying = {op: [name for name in CONFIG_COLUMNS if len(fields[name]) > 1
                    and name not in ("offset", "dtype", "device")] for op, fields in seen.items()}
    return [setting_label(config, varying[op]) for op, config in zip(data["op"], configs)]


# What a report reads: every column but the per-call samples (a list per row, the bulk of a
# store), which it needs only for rows stored without their quartiles (none since those came).
REPORT_COLUMNS = [c for c in COLUMNS if c != "time_samples_s"]


def sweep_frame(results_dir: pathlib.Path) -> pd.DataFrame:
    """The rows a report shows: latest per point key, with their config."""
    frame = latest_per_key(load_sweeps(results_dir, REPORT_COLUMNS))
    return with_config(frame) if not frame.empty else frame


__all__ = ["DEFAULT_BASELINE", "REFERENCE_BACKEND", "Cell", "cells", "config_dict", "load_run", "load_sweeps",
           "load_table", "offset_errors", "quartiles",
           "runs_in_order", "samples", "select_run", "sweep_frame", "with_config"]
