"""The interactive charts of report.html: plotly.js and the data, inlined in the page.

``blocks(frame, baseline)`` returns the document blocks (filters and chart containers)
and embeds the selected data as JSON; ``head_html()`` inlines plotly.js (from the
``plotly`` package: no network access at view time) and ``interactive.js`` beside this
file, which draws from that data:

* time vs N, log-log, hover on every point (median, IQR, first call, samples, host, git,
  status), filters for op, dtype, device, blur and D;
* who wins where: the fastest backend per configuration x N and its margin over the
  runner-up (cells where only one backend was timed say so, in grey);
* accuracy vs time per op at one N (each backend and setting a point, Pareto front dotted);
* memory vs N with the pre-flight refusals (at their estimate) and out-of-memory points;
* status counts per backend; a click on a bar lists the points and their messages;
* the regret of ``backend="auto"`` when a calibration is present (see kpbench.backends.auto).
"""
from __future__ import annotations

import functools
import pathlib

import pandas as pd

from kpbench.results import tables
from kpbench.results.document import Raw
from kpbench.results.escape import plotly_text, script_code, script_json
from kpbench.results.format import (
    CONFIG_COLUMNS, backend_sort_key, config_label, fmt_bytes, fmt_err, fmt_n, fmt_seconds,
    iterations_text, point_label, row_config, text, value,
)
from kpbench.results.schema import STATUSES
from kpbench.results.selection import cells, config_dict, quartiles

FILTERS = ("op", "dtype", "device", "blur", "D", "data")
COLORS = {"numpy": "#1f77b4", "torch": "#ff7f0e", "keops": "#2ca02c", "cuda": "#d62728"}
STATUS_COLORS = {"ok": "#2ca02c", "oom": "#9467bd", "timeout": "#8c564b", "unsupported": "#bbbbbb",
                 "skipped": "#17becf", "error": "#d62728"}
ERR_FLOOR = 1e-17   # an exact agreement (error 0) would vanish from a log axis: shown at the floor
_MAX_ERROR_CHARS = 400
MAX_ROWS_SHOWN = 2000   # past this many rows, the charts get one row per point and status
_JS = pathlib.Path(__file__).with_name("interactive.js")


@functools.lru_cache(maxsize=1)
def plotly_script() -> str:
    """plotly.js (from the plotly package) in a <script> tag."""
    from plotly.offline import get_plotlyjs

    return f"<script>{script_code(get_plotlyjs())}</script>"


def head_html() -> str:
    """<script> tags: plotly.js and the report's chart code, inlined."""
    return plotly_script() + f"<script>{script_code(_JS.read_text(encoding='utf-8'))}</script>"


def blocks(frame: pd.DataFrame, baseline: str, regret: list[dict] | None = None) -> list:
    """The filters and chart containers, the data as a JSON script."""
    payload = script_json(payload_of(frame, regret))
    charts = "".join(f'<div id="kp-{name}" class="kp-chart"></div>'
                     for name in ("time", "wins"))
    return [Raw(
        '<div id="kp-filters" class="kp-filters"></div>'
        + '<p><label><input type="checkbox" id="kp-time-limit"> draw the machine\'s limit on the '
          'time chart (limit_s: the least time its measured rates allow)</label></p>' + charts
        + '<p><label>accuracy vs time at N <select id="kp-pareto-n"></select></label></p>'
        + '<div id="kp-pareto" class="kp-chart"></div><div id="kp-memory" class="kp-chart"></div>'
        + '<div id="kp-status" class="kp-chart"></div><div id="kp-messages" class="kp-note"></div>'
        + ('<div id="kp-regret" class="kp-chart"></div>' if regret else "")
        + f"<script>window.KPBENCH = {payload};</script>",
        note="(interactive charts: open report.html)")]


def payload_of(frame: pd.DataFrame, regret: list[dict] | None = None) -> dict:
    backends = sorted(frame["backend"].dropna().unique(), key=backend_sort_key)
    return {
        "filters": list(FILTERS), "statuses": list(STATUSES), "status_colors": STATUS_COLORS,
        "backends": backends, "colors": {b: COLORS.get(b, "#7f7f7f") for b in backends},
        "rows": row_records(shown_rows(frame)), "wins": win_records(frame), "cells": cell_records(frame),
        "regret": regret or [],
    }


def _filter_fields(record: dict) -> dict:
    return {f: _filter_value(f, record.get(f)) for f in FILTERS}


def _filter_value(name: str, v):
    """A filter's value; the default data pair (null) is offered as 'default'."""
    v = _json_value(v)
    return "default" if name == "data" and v is None else v


def _json_value(v):
    v = value(v)
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _series(backend: str, config: dict, op: str) -> str:
    return f"{backend} {config_label(config, op=op)}".strip()


def shown_rows(frame: pd.DataFrame, limit: int = MAX_ROWS_SHOWN) -> pd.DataFrame:
    """The rows the charts embed: all of them up to ``limit``; past it, one per (op, config,
    backend, N, status): the row of median time (the lower middle; failed rows, which have
    none, the middle one in store order), marked with how many it stands for. So the page grows with the configurations
    (at most len(STATUSES) records per cell), never with seeds, repeats or runs."""
    if len(frame) <= limit:
        return frame
    frame = frame.assign(_time=pd.to_numeric(frame["time_median_s"], errors="coerce"))
    frame = frame.sort_values("_time", kind="stable", na_position="last")
    groups = frame.groupby(["op", "config", "backend", "N", "status"], sort=False, dropna=False)
    position = groups.cumcount()
    size = groups["_time"].transform("size")
    middle = position == (size - 1) // 2
    chosen = frame[middle].assign(_represents=size[middle]).sort_index()
    return chosen.drop(columns="_time")


def row_records(frame: pd.DataFrame) -> list[dict]:
    """Each sweep row: what the charts plot and a hover text."""
    records = []
    for row in frame.to_dict("records"):
        config = row_config(row)
        q1, q3 = _quartiles(row)
        represents = row.get("_represents")
        hover = row_hover(row, q1, q3)
        if represents is not None and represents > 1:
            hover += "<br>" + plotly_text(f"the median-time row of {int(represents)} rows (seeds, runs) "
                                          "at this point and status")
        records.append({
            **_filter_fields(row), "backend": row["backend"], "N": int(row["N"]),
            "status": row["status"], "series": _series(row["backend"], config, row["op"]),
            "label": point_label(row), "error": _short_error(row.get("error")),
            "time_median_s": _json_value(row.get("time_median_s")), "q1": q1, "q3": q3,
            "limit_s": _json_value(row.get("limit_s")),
            "peak_mem_bytes": _json_value(row.get("peak_mem_bytes")),
            "mem_estimate_bytes": _json_value(row.get("mem_estimate_bytes")),
            "hover": hover,
        })
    return records


def _quartiles(row: dict) -> tuple:
    q = quartiles(row)
    return (None, None) if q is None else q


def _short_error(error) -> str | None:
    error = value(error)
    if error is None:
        return None
    return error if len(error) <= _MAX_ERROR_CHARS else error[:_MAX_ERROR_CHARS] + " [...]"


def row_hover(row: dict, q1, q3) -> str:
    lines = [point_label(row), f"status {row['status']}"]
    if value(row.get("time_median_s")) is not None:
        iqr = f"IQR {fmt_seconds(q1)}–{fmt_seconds(q3)}" if q1 is not None else "IQR -"
        lines.append(f"median {fmt_seconds(row['time_median_s'])}, {iqr}")
        lines.append(f"first call {fmt_seconds(row.get('first_call_s'))}, "
                     f"{text(row.get('repeats'))} samples x {text(row.get('number'))} calls")
    if value(row.get("peak_mem_bytes")) is not None:
        lines.append(f"peak memory {fmt_bytes(row['peak_mem_bytes'])} ({text(row.get('mem_method'))})")
    if value(row.get("mem_estimate_bytes")) is not None:
        lines.append(f"dense estimate {fmt_bytes(row['mem_estimate_bytes'])}")
    if value(row.get("rel_err")) is not None:
        lines.append(f"rel. error {fmt_err(row['rel_err'])}")
    iterations = iterations_text([row.get("iterations")], [row.get("converged")])
    if iterations is not None:
        lines.append(f"{iterations} iterations")
    lines.append(f"host {text(row.get('host'))}, git {text(row.get('git_commit'))[:10]}, "
                 f"run {text(row.get('run_id'))[:8]}")
    return "<br>".join(plotly_text(line) for line in lines)


def _config_record(op: str, config: tuple) -> dict:
    c = config_dict(config)
    return {"op": op, **{f: _filter_value(f, c.get(f)) for f in FILTERS if f != "op"}}


def win_records(frame: pd.DataFrame) -> list[dict]:
    """tables.wins and tables.dtype_wins as records: the configuration (its label and its
    parts, op and N apart), the winner and its margin. ``single``: one backend alone was
    timed there (counted, not drawn); ``folded``: a single whose cell is compared across
    dtypes instead (a record with dtype None) when the dtype filter is "all"."""
    table = cells(frame)
    across = tables.dtype_wins(table)
    dtype_at = CONFIG_COLUMNS.index("dtype")
    folded_keys = {(w.op, w.config, w.N) for w in across}
    records = []
    for w in tables.wins(table) + across:
        config = config_dict(w.config)
        key = (w.op, w.config[:dtype_at] + (None,) + w.config[dtype_at + 1:], w.N)
        records.append({
            **_config_record(w.op, w.config), "N": int(w.N),
            "config": config_label(config, op=w.op) or "(default)",
            "parts": [[name, config_label(config, only=[name], op=w.op)]
                      for name in CONFIG_COLUMNS if config_label(config, only=[name], op=w.op)],
            "winner": w.winner, "runner_up": w.runner_up, "margin": w.margin, "time": w.time,
            "single": w.runner_up is None, "dtypes": list(w.dtypes) if w.dtypes else None,
            "folded": w.runner_up is None and w.dtypes is None and key in folded_keys})
    return records


def cell_records(frame: pd.DataFrame) -> list[dict]:
    """Each (op, config, backend, N) with a time and an error: a point of the Pareto chart."""
    records = []
    for (op, config, backend, n), cell in cells(frame).items():
        if cell.time is None or cell.err is None:
            continue
        label = _series(backend, config_dict(config), op)
        records.append({
            **_config_record(op, config), "backend": backend, "N": int(n),
            "time": cell.time, "err": cell.err, "err_shown": max(cell.err, ERR_FLOOR),
            "hover": plotly_text(f"{label} N={fmt_n(n)}") + "<br>"
                     + plotly_text(f"median {fmt_seconds(cell.time)}, max rel. error {fmt_err(cell.err)}"),
        })
    return records


__all__ = ["blocks", "head_html", "payload_of", "plotly_script", "FILTERS"]
