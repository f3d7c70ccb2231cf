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
from kpbench.results.format import (CONFIG_COLUMNS, iterations_text, number, row_config, setting_label,
                                    value)
from kpbench.results.schema import COLUMNS
from kpbench.results.store import READ_ERRORS, SWEEPS, ResultStore, latest_per_key, printable

# The dense backend: the one a user has without installing anything else.
DEFAULT_BASELINE = "torch"
# errors are measured against this float64 backend: its own error is 0 by definition
REFERENCE_BACKEND = "numpy"


def load_sweeps(path: str | os.PathLike) -> pd.DataFrame:
    """Sweep rows from a results dir (with ``sweeps/``), a sweeps dir, or one Parquet file.

    All rows of every run (see :func:`select_run`), every schema column present.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise KPBenchError(f"no results at {path}: the path does not exist")
    if (path / SWEEPS).is_dir():
        frame = ResultStore(path).read(SWEEPS)
    elif path.is_dir() and path.name == SWEEPS:
        frame = ResultStore(path.parent).read(SWEEPS)
    elif (path.is_dir() and any(path.glob("*.parquet"))) or (path.is_file() and path.suffix == ".parquet"):
        frame = _read_parquet(path)
    elif path.is_dir():
        frame = pd.DataFrame(columns=COLUMNS)
    else:
        raise KPBenchError(f"{path} is neither a results directory nor a Parquet file")
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame


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
    """Adds ``config`` (a hashable tuple of CONFIG_COLUMNS values, nulls as None)."""
    frame = frame.copy()
    configs = [tuple(row_config(r)[c] for c in CONFIG_COLUMNS) for r in frame.to_dict("records")]
    frame["config"] = pd.Series(configs, index=frame.index, dtype=object)
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


def cells(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> dict[tuple, Cell]:
    """(op, config, backend, N) -> Cell: median time, max memory and error of the ok rows,
    and the speed-up over ``baseline`` in the same op, config (dtype, device) and N (none for
    the baseline itself)."""
    frame = frame if "config" in frame else with_config(frame)
    result: dict[tuple, Cell] = {}
    for key, group in frame.groupby(["op", "config", "backend", "N"], sort=False):
        result[key] = _cell(group)
    for (op, config, backend, n), cell in result.items():
        base = result.get((op, config, baseline, n))
        if backend != baseline and base is not None and base.time and cell.time:
            cell.speedup = base.time / cell.time
    return result


def _cell(group: pd.DataFrame) -> Cell:
    ok = group[group["status"] == "ok"]
    if ok.empty:
        errors = group["error"].dropna()
        return Cell(status=group["status"].mode().iloc[0],
                    error=str(errors.iloc[0]) if not errors.empty else None)
    return Cell(
        status="ok",
        time=value(pd.to_numeric(ok["time_median_s"]).median()),
        iqr=value(pd.to_numeric(ok["time_iqr_s"]).median()),
        first=value(pd.to_numeric(ok.loc[ok["sweep"] == "speed", "first_call_s"]).median()),
        mem=value(pd.to_numeric(ok["peak_mem_bytes"]).max()),
        err=value(pd.to_numeric(ok["rel_err"]).max()),
        grad_fd=value(pd.to_numeric(ok["grad_fd_rel_err"]).max()),
        iterations=iterations_text(ok["iterations"], ok["converged"]),
        limit=value(pd.to_numeric(ok["limit_frac"]).median()) if "limit_frac" in ok else None,
    )


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


def sweep_frame(results_dir: pathlib.Path) -> pd.DataFrame:
    """The rows a report shows: latest per point key, with their config."""
    frame = latest_per_key(load_sweeps(results_dir))
    return with_config(frame) if not frame.empty else frame


__all__ = ["DEFAULT_BASELINE", "REFERENCE_BACKEND", "Cell", "cells", "config_dict", "load_sweeps",
           "load_table", "offset_errors", "quartiles",
           "runs_in_order", "samples", "select_run", "sweep_frame", "with_config"]
