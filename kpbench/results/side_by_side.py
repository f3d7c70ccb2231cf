"""Libraries side by side: for one op, N and device, every backend and peer in one table and
one chart -- median time, relative error vs the converged float64 truth, gradient error,
peak memory, iterations, first-call (compile) time -- with the Pareto front of time vs error.
It is what a user reads to pick a library.

A row is one (backend, configuration): a peer's settings that differ (FlashSinkhorn's TF32 on
and off are two backends) are rows of their own, and so are dtypes. Speed and accuracy rows
of the same point meet in one row (:func:`kpbench.results.selection.cells`); what a backend
refused (an interpreted peer's speed points) is said in the row's note.
"""
from __future__ import annotations

import pathlib

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kpbench.results.escape import figure_text
from kpbench.results.files import save_figure
from kpbench.results.format import (
    backend_sort_key, config_label, fmt_bytes, fmt_err, fmt_n, fmt_seconds, text, value,
)
from kpbench.results.selection import cells, config_dict

HEADER = ["backend", "setting", "median time", "rel. error vs truth", "gradient error (FD)",
          "peak memory", "iterations", "first call", "Pareto", "note"]
NOTE_CHARS = 160


def choices(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(op, device, N) to show, one per (op, device): the N where the most backends have an ok
    row (the largest such N on a tie); only where two backends or more have one."""
    ok = frame[frame["status"] == "ok"]
    picked = []
    for (op, device), group in ok.groupby(["op", "device"], sort=True):
        counts = group.groupby("N")["backend"].nunique()
        if counts.max() < 2:
            continue
        best = counts[counts == counts.max()].index.max()
        picked.append((str(op), str(device), int(best)))
    return picked


def view(frame: pd.DataFrame, op: str, device: str, N: int) -> list[dict]:
    """The rows of one side-by-side view, sorted by backend then setting; each a dict with
    the numbers (None where not measured) and ``pareto`` (on the time-vs-error front)."""
    here = frame[(frame["op"] == op) & (frame["device"] == device) & (frame["N"] == N)]
    rows = []
    for (_, config, backend, _), cell in cells(here).items():
        notes = _refusals(here, backend, config)
        rows.append({"backend": backend, "config": config,
                     "setting": config_label(config_dict(config), op=op, only=_varying(here)),
                     "time": cell.time, "err": cell.err, "grad": cell.grad_fd, "mem": cell.mem,
                     "iterations": cell.iterations,
                     "first": (cell.first if cell.first is not None
                               else _first_call(here, backend, config)),
                     "status": cell.status, "note": notes or cell.error})
    front = pareto_front([(r["time"], r["err"]) for r in rows])
    for row, on_front in zip(rows, front):
        row["pareto"] = on_front
    return sorted(rows, key=lambda r: (backend_sort_key(r["backend"]), r["setting"]))


def _varying(frame: pd.DataFrame) -> list[str]:
    """The configuration columns that take more than one value here (the others go unsaid)."""
    configs = [config_dict(c) for c in frame["config"]]
    names = {name for c in configs for name in c}
    return [n for n in names if len({str(c.get(n)) for c in configs}) > 1]


def _first_call(frame: pd.DataFrame, backend: str, config: tuple) -> float | None:
    """The median first call of the ok rows of (backend, config) when no speed row timed it
    (an accuracy row times its first call too: compilation included)."""
    mine = frame[(frame["backend"] == backend) & (frame["config"].map(lambda c: c == config))
                 & (frame["status"] == "ok")]
    return value(pd.to_numeric(mine["first_call_s"]).median()) if not mine.empty else None


def _refusals(frame: pd.DataFrame, backend: str, config: tuple) -> str | None:
    """What the rows of (backend, config) that are not ok say, one per sweep kind."""
    mine = frame[(frame["backend"] == backend) & (frame["config"].map(lambda c: c == config))
                 & (frame["status"] != "ok")]
    said = {f"{row['sweep']}: {row['status']}: {text(row.get('error'))}"[:NOTE_CHARS]
            for row in mine.to_dict("records")}
    return "; ".join(sorted(said)) or None


def pareto_front(points: list[tuple]) -> list[bool]:
    """For each (time, error): True when no other point is at least as good in both and
    better in one; points missing either number are off the front."""
    usable = [(t, e) for t, e in points if value(t) is not None and value(e) is not None]

    def dominated(t, e):
        return any(t2 <= t and e2 <= e and (t2 < t or e2 < e) for t2, e2 in usable)
    return [value(t) is not None and value(e) is not None and not dominated(t, e)
            for t, e in points]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[r["backend"], r["setting"] or "-", fmt_seconds(r["time"]), fmt_err(r["err"]),
             fmt_err(r["grad"]), fmt_bytes(r["mem"]), text(r["iterations"]),
             fmt_seconds(r["first"]), "yes" if r["pareto"] else "", text(r["note"])]
            for r in rows]


def title(op: str, device: str, N: int) -> str:
    return f"{op} at N={fmt_n(N)} on {device}"


def plot(rows: list[dict], op: str, device: str, N: int, path: pathlib.Path):
    """Median time vs relative error (log-log), one labelled point per row, the Pareto front
    as a line; None when fewer than one row has both numbers."""
    shown = [r for r in rows if value(r["time"]) is not None and value(r["err"]) is not None]
    if not shown:
        return None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    floor = min([r["err"] for r in shown if r["err"] > 0] or [1e-17]) / 10
    for r in shown:
        err = max(r["err"], floor)
        ax.scatter(r["time"], err, color="tab:red" if r["pareto"] else "tab:gray", zorder=3)
        ax.annotate(figure_text(f"{r['backend']} {r['setting']}".strip()), (r["time"], err),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = sorted((r["time"], max(r["err"], floor)) for r in shown if r["pareto"])
    ax.plot([t for t, _ in front], [e for _, e in front], ":", color="tab:red",
            label="Pareto front")
    ax.set(xscale="log", yscale="log", xlabel="median time [s]",
           ylabel="relative error vs the converged float64 truth",
           title=figure_text(title(op, device, N)))
    ax.legend(fontsize=7)
    return save_figure(fig, path)


__all__ = ["HEADER", "choices", "pareto_front", "plot", "table_rows", "title", "view"]
