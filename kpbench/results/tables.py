"""Tables of a report, from selected sweep rows (see :mod:`kpbench.results.selection`).

Each function returns plain rows of text (or small records) that any renderer can lay out:
who wins at each N (and by how much), the crossover lines, the OOM frontier, status
counts, per-op backend x N tables, the runs, reproduction summaries.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kpbench.results.format import (
    CONFIG_COLUMNS, backend_label, backend_sort_key, config_label, fmt_bytes, fmt_err, fmt_n,
    fmt_number, fmt_percent, fmt_ratio, fmt_seconds, text, value,
)
from kpbench.results.schema import STATUSES
from kpbench.results.selection import DEFAULT_BASELINE, Cell, cells, config_dict, offset_errors


@dataclass(frozen=True)
class Win:
    """The fastest backend at one (op, config, N) among those timed there."""
    op: str
    config: tuple
    N: int
    winner: str
    time: float
    runner_up: str | None       # None: only the winner was timed here
    margin: float | None        # runner-up time / winner time
    dtypes: tuple | None = None  # across dtypes (config without dtype): (winner's, runner-up's)


def wins(table: dict[tuple, Cell]) -> list[Win]:
    """One Win per (op, config, N) with at least one timed backend, sorted."""
    timed: dict[tuple, list] = {}
    for (op, config, backend, n), cell in table.items():
        if cell.status == "ok" and cell.time is not None:
            timed.setdefault((op, config, n), []).append((cell.time, backend))
    result = []
    for (op, config, n), entries in timed.items():
        entries.sort()
        (t, best), rest = entries[0], entries[1:]
        result.append(Win(op, config, n, best, t, rest[0][1] if rest else None,
                          rest[0][0] / t if rest else None))
    return sorted(result, key=lambda w: (w.op, str(w.config), w.N))


def dtype_wins(table: dict[tuple, Cell]) -> list[Win]:
    """Across dtypes, where a dtype alone compares nothing: per (op, configuration without
    its dtype, N) where every dtype had exactly one backend timed, and two or more different
    backends were (numpy in float64, torch in float32), the fastest of them and its margin;
    ``config`` has dtype None, ``dtypes`` says which dtype each ran in."""
    dtype_at = CONFIG_COLUMNS.index("dtype")
    timed: dict[tuple, dict] = {}
    for (op, config, backend, n), cell in table.items():
        if cell.status == "ok" and cell.time is not None:
            folded = config[:dtype_at] + (None,) + config[dtype_at + 1:]
            timed.setdefault((op, folded, n), {}).setdefault(config[dtype_at], []).append(
                (cell.time, backend))
    result = []
    for (op, config, n), per_dtype in timed.items():
        if len(per_dtype) < 2 or any(len(entries) != 1 for entries in per_dtype.values()):
            continue
        entries = sorted((entries[0] + (dtype,)) for dtype, entries in per_dtype.items())
        if len({backend for _, backend, _ in entries}) < 2:
            continue
        (t, best, best_dtype), (t2, second, second_dtype) = entries[0], entries[1]
        result.append(Win(op, config, n, best, t, second, t2 / t, (best_dtype, second_dtype)))
    return sorted(result, key=lambda w: (w.op, str(w.config), w.N))


def crossover_lines(frame: pd.DataFrame) -> list[str]:
    """For each (op, config): which backend is fastest at each N, with the lead changes.

    e.g. 'kernel_product gaussian D=3 blur=0.1 float32 cpu: keops fastest at N<=1e3,
    torch at 1e4, keops from 1e5'. Only N where two or more backends were timed name a
    winner; a configuration where one backend alone was timed says 'only X was timed'.
    """
    table = cells(frame)
    by_group: dict[tuple, list[Win]] = {}
    for win in wins(table):
        by_group.setdefault((win.op, win.config), []).append(win)
    groups = sorted({(op, config) for op, config, _, _ in table}, key=lambda g: (g[0], str(g[1])))
    return [_crossover_line(op, config, by_group.get((op, config), []), table) for op, config in groups]


def _crossover_line(op, config, group_wins: list[Win], table) -> str:
    head = f"{op} {config_label(config_dict(config), op=op)}".strip()
    contested = [(w.N, w.winner) for w in group_wins if w.runner_up is not None]
    alone = [w for w in group_wins if w.runner_up is None]
    if contested:
        line = f"{head}: {_describe_runs(_runs(contested))}"
        for backend in sorted({w.winner for w in alone}, key=backend_sort_key):
            ns = ", ".join(fmt_n(w.N) for w in alone if w.winner == backend)
            line += f"; only {backend} was timed at N={ns}"
        return line
    if group_wins:
        timed = sorted({w.winner for w in group_wins}, key=backend_sort_key)
        return f"{head}: only {', '.join(timed)} was timed (no comparison)"
    tried = [key for key in table if key[:2] == (op, config)]
    if any(table[key].status == "ok" for key in tried):
        return f"{head}: no timings (only memory/accuracy rows)"
    backends = sorted({key[2] for key in tried}, key=backend_sort_key)
    return f"{head}: no backend completed any N ({', '.join(backends)} tried)"


def _runs(winners: list[tuple]) -> list[tuple[str, int, int]]:
    """[(n, backend)] sorted by n -> [(backend, first n, last n)] of consecutive leads."""
    runs: list[list] = []
    for n, backend in winners:
        if runs and runs[-1][0] == backend:
            runs[-1][2] = n
        else:
            runs.append([backend, n, n])
    return [tuple(r) for r in runs]


def _describe_runs(runs: list[tuple[str, int, int]]) -> str:
    if len(runs) == 1:
        backend, lo, hi = runs[0]
        where = f"N={fmt_n(lo)}" if lo == hi else f"all N ({fmt_n(lo)}..{fmt_n(hi)})"
        return f"{backend} fastest at {where}"
    parts = []
    for i, (backend, lo, hi) in enumerate(runs):
        if i == 0:
            parts.append(f"{backend} fastest at N<={fmt_n(hi)}")
        elif i == len(runs) - 1:
            parts.append(f"{backend} from {fmt_n(lo)}")
        elif lo == hi:
            parts.append(f"{backend} at {fmt_n(lo)}")
        else:
            parts.append(f"{backend} at {fmt_n(lo)}..{fmt_n(hi)}")
    return ", ".join(parts)


FRONTIER_HEADER = ["op", "backend", "device", "dtype", "largest N ok", "first N refused/oom",
                   "first N timeout"]
# "skipped" is the pre-flight refusal of a dense backend over its memory budget
REFUSED = ("oom", "skipped")


def oom_frontier(frame: pd.DataFrame) -> list[list[str]]:
    """Per (op, backend, device, dtype): the largest N completed, the first N refused by the
    memory pre-flight or out of memory, and the first N that timed out ('-' where none).
    Combinations that are only ever unsupported are left out."""
    rows = []
    keys = ["op", "backend", "device", "dtype"]
    for key, group in frame.groupby(keys, dropna=False, sort=False):
        if (group["status"] == "unsupported").all():
            continue   # e.g. numpy in float32: no frontier to speak of

        def n_where(statuses, pick):
            ns = group.loc[group["status"].isin(statuses), "N"]
            return fmt_n(pick(ns)) if not ns.empty else "-"
        rows.append([text(k) for k in key]
                    + [n_where(["ok"], max), n_where(REFUSED, min), n_where(["timeout"], min)])
    return sorted(rows, key=lambda r: (r[0], backend_sort_key(r[1]), r[2], r[3]))


def status_counts(frame: pd.DataFrame) -> list[list[str]]:
    """Rows [op, backend, count per status...] over all configs."""
    rows = []
    for (op, backend), group in frame.groupby(["op", "backend"], sort=False):
        counts = group["status"].value_counts()
        rows.append([op, backend] + [str(int(counts.get(s, 0))) for s in STATUSES])
    return sorted(rows, key=lambda r: (r[0], backend_sort_key(r[1])))


def unconverged_truths(frame: pd.DataFrame) -> list[str]:
    """One line per op whose accuracy rows were judged against a float64 truth that did not
    converge (their rel_err carries the truth's own error: at most its marginal error)."""
    if "truth_converged" not in frame:
        return []
    bad = frame[frame["truth_converged"].eq(False)]
    lines = []
    for op, group in bad.groupby("op", sort=True):
        worst = pd.to_numeric(group["truth_marginal_err"], errors="coerce").max()
        lines.append(f"{op}: {len(group)} accuracy row(s), N up to {fmt_n(group['N'].max())}; "
                     f"the truth's marginal error up to {fmt_err(worst)}")
    return lines


def offset_table(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per op, setting, backend, dtype and device, the max relative
    error at each offset (the numbers of the error-vs-offset figure); no rows when no op has
    two offsets. The cuda backend on device cpu is named as its host execution."""
    data = offset_errors(frame)
    offsets = sorted(data["offset"].unique())
    header = ["op", "setting", "backend", "dtype", "device", *(f"offset {o:g}" for o in offsets)]
    lines = sorted(data.groupby(["op", "setting", "backend", "dtype", "device"]),
                   key=lambda kv: (*kv[0][:2], backend_sort_key(kv[0][2]), *kv[0][3:]))
    rows = []
    for (op, setting, backend, dtype, device), group in lines:
        errors = dict(zip(group["offset"], group["rel_err"]))
        rows.append([op, setting, backend_label(backend, device), dtype, device,
                     *(fmt_err(errors.get(o)) for o in offsets)])
    return header, rows


# (Cell attribute, metric name, formatter); the speed-up's name gets the baseline.
METRIC_ROWS = (("time", "median time", fmt_seconds), ("iqr", "IQR", fmt_seconds),
               ("first", "first call", fmt_seconds), ("speedup", "speed-up vs {baseline}", fmt_ratio),
               ("mem", "peak memory", fmt_bytes), ("err", "max rel. error", fmt_err),
               ("grad_fd", "grad vs finite diff.", fmt_err), ("iterations", "iterations", str),
               ("limit", "% of the machine's limit", fmt_percent))


def op_tables(frame: pd.DataFrame, op: str, baseline: str = DEFAULT_BASELINE
              ) -> list[tuple[str, list[str], list[list[str]]]]:
    """For one op, per configuration (dtype and device apart): (title, header, rows) of a
    backend x N table. Per backend/dtype/device line, the metrics that have a value somewhere
    in the table (median time, its IQR, the first call, speed-up vs ``baseline`` in the same
    dtype/device, peak memory, max rel. error, gradient vs finite differences); a line that
    never completed shows its statuses alone."""
    by_table: dict[tuple, dict] = {}
    for (o, config, backend, n), cell in cells(frame, baseline).items():
        if o != op:
            continue
        c = config_dict(config)
        shared = tuple(None if k in ("dtype", "device") else v for k, v in c.items())
        by_table.setdefault(shared, {})[(backend, c["dtype"], c["device"], n)] = cell
    return [_op_table(op, shared, entries, baseline)
            for shared, entries in sorted(by_table.items(), key=lambda kv: str(kv[0]))]


def _op_table(op, shared: tuple, entries: dict, baseline: str):
    ns = sorted({key[3] for key in entries})
    lines = sorted({key[:3] for key in entries}, key=lambda k: (backend_sort_key(k[0]), str(k[1:])))
    metrics = [(attr, name.format(baseline=baseline), fmt) for attr, name, fmt in METRIC_ROWS
               if any(getattr(c, attr) is not None for c in entries.values())]
    header = ["backend", "metric"] + [f"N={fmt_n(n)}" for n in ns]
    rows = []
    for line in lines:
        row_cells = [entries.get((*line, n)) for n in ns]
        label = " ".join(str(part) for part in line if part is not None)
        shown = [m for m in metrics if any(c is not None and getattr(c, m[0]) is not None for c in row_cells)]
        if not shown:   # only failures (or nothing this table measures): the statuses say it
            rows.append([label, "status"] + [c.status if c is not None else "" for c in row_cells])
            continue
        for i, (attr, name, fmt) in enumerate(shown):
            rows.append([label if i == 0 else "", name]
                        + [_cell_text(c, attr, fmt, first=i == 0) for c in row_cells])
    return config_label(config_dict(shared), op=op) or "(default)", header, rows


def _cell_text(cell: Cell | None, attr: str, fmt, first: bool) -> str:
    if cell is None:
        return ""
    if cell.status != "ok":
        return cell.status if first else ""
    v = getattr(cell, attr)
    return fmt(v) if v is not None else ""


RUNS_HEADER = ["run", "sweep", "executor", "started (UTC)", "rows", "host", "cpu", "gpu",
               "git", "torch", "pykeops", "cxxflags"]


def runs_table(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for run_id, group in frame.groupby("run_id", dropna=False, sort=False):
        first = group.iloc[0]
        started = value(group["started_at"].min())
        rows.append([
            str(run_id)[:12], text(first["sweep"]), text(first["executor"]),
            started.strftime("%Y-%m-%d %H:%M:%S") if started is not None else "-",
            str(len(group)), text(first["host"]), text(first["cpu"]), text(first["gpu"]),
            text(first["git_commit"])[:10], text(first["torch_version"]),
            text(first["pykeops_version"]), text(first["cxxflags"]) or "-",
        ])
    return sorted(rows, key=lambda r: r[3])


_REPRO_GROUP = ["loss", "backend", "N", "M", "blur", "p", "reach", "dtype", "device", "seed"]
_REPRO_STEP = ["step", "iteration", "iter", "snapshot", "epoch"]
_MAX_VALUE_COLUMNS = 8


def reproduction_summary(frame: pd.DataFrame) -> tuple[str, list[str], list[list[str]]]:
    """(the columns constant over the table as text, header, rows): per (loss, backend, N,
    ...) the row count, the last step, its status and its numeric columns."""
    from kpbench.results.meta import META_COLUMNS

    varying = {c for c in frame.columns if frame[c].astype(str).nunique(dropna=False) > 1}
    step_col = next((c for c in _REPRO_STEP if c in frame), None)
    skip = set(META_COLUMNS) | {step_col, "key", "error", "status"}
    constant = [c for c in frame.columns if c not in varying and c not in skip
                and frame[c].notna().all()]
    group_cols = [c for c in _REPRO_GROUP if c in varying]
    value_cols = [c for c in frame.columns
                  if c in varying and c not in skip and c not in group_cols
                  and pd.api.types.is_numeric_dtype(frame[c])
                  and not pd.api.types.is_bool_dtype(frame[c])][:_MAX_VALUE_COLUMNS]
    has_status = "status" in frame
    header = (group_cols + ["rows"] + ([f"last {step_col}"] if step_col else [])
              + (["status"] if has_status else []) + value_cols)
    rows = []
    groups = frame.groupby(group_cols, dropna=False, sort=True) if group_cols else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        last = group.sort_values(step_col, kind="stable").iloc[-1] if step_col else group.iloc[-1]
        row = [text(k) for k in key] + [str(len(group))]
        if step_col:
            row.append(text(last[step_col]))
        if has_status:
            row.append(text(last["status"]))
        row += [fmt_number(last[c]) for c in value_cols]
        rows.append(row)
    same = ", ".join(f"{c}={fmt_number(frame[c].iloc[0])}" for c in constant)
    return same, header, rows


__all__ = ["Win", "wins", "crossover_lines", "oom_frontier", "status_counts", "op_tables",
           "runs_table", "reproduction_summary", "FRONTIER_HEADER", "RUNS_HEADER"]
