"""The report's view across data sources: for one op, each backend on every data set.

Which data make a backend slow, inaccurate or slow to converge: per (backend, the rest of
the configuration, N) the time, the error against the float64 truth and the Sinkhorn
iteration count on each data source (:mod:`kpbench.datasets.sources`), and one line per
group naming the source where the error and the iterations are worst, and by how much
against the best. Shown only when the rows hold more than one data source.
"""
from __future__ import annotations

import pandas as pd

from kpbench.results.format import (backend_sort_key, config_label, fmt_err, fmt_n, fmt_seconds,
                                    number)
from kpbench.results.selection import cells, config_dict, with_config

HEADER = ["data", "D", "N", "configuration", "backend", "time", "rel. error", "iterations", "status"]
PREFERRED_OPS = ("sinkhorn", "sinkhorn_grad", "kernel_product")


def data_label(data) -> str:
    return "default" if data is None else str(data)


def data_sources(frame: pd.DataFrame) -> list[str]:
    """The data sources of the rows, as labels ('default' for the default pair)."""
    if frame.empty or "data" not in frame:
        return []
    return sorted({data_label(None if pd.isna(v) else v) for v in frame["data"]})


def filter_data(frame: pd.DataFrame, sources: list[str]) -> pd.DataFrame:
    """The rows whose data source is one of ``sources`` (labels; 'default' = no data set)."""
    labels = frame["data"].map(lambda v: data_label(None if pd.isna(v) else v))
    return frame[labels.isin(sources)]


def pick_op(frame: pd.DataFrame) -> str | None:
    """The op to show: the first of PREFERRED_OPS measured on two data sources or more,
    else any such op; None when no op has."""
    ops = [op for op, rows in frame.groupby("op") if len(data_sources(rows)) > 1]
    for op in PREFERRED_OPS:
        if op in ops:
            return op
    return sorted(ops)[0] if ops else None


def _rest(config: dict, op: str) -> str:
    """The configuration without data and D (their own columns)."""
    return config_label({k: v for k, v in config.items() if k not in ("data", "D")}, op=op)


def across_data(frame: pd.DataFrame, op: str) -> list[list[str]]:
    """Rows of HEADER for ``op``: each (data, backend, configuration, N) cell."""
    rows = []
    for (_, config, backend, n), cell in cells(with_config(frame[frame["op"] == op])).items():
        c = config_dict(config)
        rows.append(((_rest(c, op), n, backend_sort_key(backend), data_label(c["data"])),
                     [data_label(c["data"]), str(c["D"]), fmt_n(n), _rest(c, op), backend,
                      fmt_seconds(cell.time), fmt_err(cell.err), cell.iterations or "-", cell.status]))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def worst_lines(frame: pd.DataFrame, op: str) -> list[str]:
    """Per (backend, configuration, N) over two data sources or more: where the error and the
    iteration count are worst, with the ratio to the best source."""
    groups: dict[tuple, list] = {}
    for (_, config, backend, n), cell in cells(with_config(frame[frame["op"] == op])).items():
        c = config_dict(config)
        groups.setdefault((backend, _rest(c, op), n), []).append((data_label(c["data"]), cell))
    lines = []
    for (backend, rest, n), entries in sorted(groups.items(), key=lambda g: (backend_sort_key(g[0][0]), g[0][1:])):
        if len(entries) < 2:
            continue
        parts = [_worst("error", [(d, number(c.err)) for d, c in entries], fmt_err),
                 _worst("iterations", [(d, _max_iterations(c.iterations)) for d, c in entries], str)]
        parts = [p for p in parts if p]
        if parts:
            lines.append(f"{op} {backend} {rest} N={fmt_n(n)}: " + "; ".join(parts))
    return lines


def _worst(what: str, values: list[tuple[str, float | None]], fmt) -> str | None:
    known = [(v, d) for d, v in values if v is not None]
    if len(known) < 2:
        return None
    (best, best_data), (worst, worst_data) = min(known), max(known)
    ratio = f"{worst / best:.3g}x" if best > 0 else "the best is 0"
    return f"{what} worst on {worst_data} ({fmt(worst)}; {ratio} the best, {best_data} {fmt(best)})"


def _max_iterations(text: str | None) -> int | None:
    """The largest count of an iterations text ('7', '385-392', '1000, not converged')."""
    if not text:
        return None
    return int(text.split(",")[0].split("-")[-1])


def blocks(frame: pd.DataFrame) -> list:
    """The report's blocks for this view (none when the rows hold one data source)."""
    from kpbench.results.document import Heading, Lines, Para, Table

    op = None if frame.empty else pick_op(frame)
    if op is None:
        return []
    return [Heading("Across data sets"),
            Para(f"{op}: the same backends on each data source ({', '.join(data_sources(frame))}); "
                 "time from speed rows, error from accuracy rows against the float64 truth."),
            Table(HEADER, across_data(frame, op)),
            Lines(worst_lines(frame, op))]


__all__ = ["HEADER", "across_data", "blocks", "data_label", "data_sources", "filter_data",
           "pick_op", "worst_lines"]
