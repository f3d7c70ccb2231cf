"""Report plots (PNG, matplotlib's Agg canvas; no pyplot state, safe in any process).

Each function takes the sweep rows (with the ``config`` column of
:func:`kpbench.results.selection.with_config`) and writes one PNG, or returns None when
there is nothing to draw (an error-vs-blur plot needs two blurs or more).
"""
from __future__ import annotations

import math
import pathlib

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kpbench.results.escape import figure_text
from kpbench.results.files import save_figure
from kpbench.results.format import CONFIG_COLUMNS, backend_label, backend_sort_key, config_label
from kpbench.results.selection import REFERENCE_BACKEND, config_dict, offset_errors

BACKEND_COLORS = {"numpy": "tab:blue", "torch": "tab:orange", "keops": "tab:green", "cuda": "tab:red"}
LINESTYLES = ("-", "--", ":", "-.")


def sweep_figures(frame: pd.DataFrame, out_dir: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """All sweep plots that have data: [(png path, caption)]."""
    ok = frame[frame["status"] == "ok"]
    wanted = [
        ("time_vs_n.png", "Median time vs N (log-log), one panel per op",
         lambda path: plot_vs_n(ok, "time_median_s", "median time [s]", path)),
        ("time_vs_n_limit.png", "Median time vs N (solid) and the time the machine's limits allow "
         "(dotted, limit_s: measured CPU rates or the GPU's device table)",
         lambda path: plot_vs_n(ok, "time_median_s", "median time [s]", path, limit_column="limit_s")),
        ("memory_vs_n.png", "Peak memory vs N (log-log), one panel per op",
         lambda path: plot_vs_n(ok, "peak_mem_bytes", "peak memory [bytes]", path)),
        ("error_vs_blur.png", "Max. relative error vs the float64 numpy reference, vs blur",
         lambda path: plot_error_vs_blur(ok, path)),
        ("error_vs_dtype.png", "Max. relative error vs the float64 numpy reference, per dtype",
         lambda path: plot_error_vs_dtype(ok, path)),
        ("error_vs_offset.png", "Max. relative error vs the float64 truth on the same (rounded) "
         "inputs, vs the offset of both clouds, per backend and dtype",
         lambda path: plot_error_vs_offset(ok, path)),
    ]
    figures = []
    for name, caption, draw in wanted:
        path = draw(out_dir / name)
        if path is not None:
            figures.append((path, caption))
        else:
            (out_dir / name).unlink(missing_ok=True)   # no stale plot from an earlier report
    return figures


def _panels(n_panels: int, width: float = 4.5, height: float = 3.5):
    ncols = min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _varying(frame: pd.DataFrame) -> list[str]:
    """Config fields that take more than one value in ``frame`` (the ones a legend needs)."""
    configs = [config_dict(c) for c in frame["config"].unique()]
    return [name for name in CONFIG_COLUMNS if len({c[name] for c in configs}) > 1]


def plot_vs_n(frame: pd.DataFrame, column: str, ylabel: str, path: pathlib.Path,
              limit_column: str | None = None):
    """``column`` (median over seeds) vs N, log-log; lines per backend and configuration;
    with ``limit_column`` (limit_s) its line too, dotted, and only where it has values."""
    data = frame[pd.to_numeric(frame[column], errors="coerce") > 0]
    if limit_column is not None:
        data = data[pd.to_numeric(data.get(limit_column), errors="coerce") > 0] \
            if limit_column in data else data.iloc[:0]
    if data.empty:
        return None
    ops = sorted(data["op"].unique())
    fig, axes = _panels(len(ops))
    for ax, op in zip(axes, ops):
        of_op = data[data["op"] == op]
        varying = _varying(of_op)
        for i, (config, by_config) in enumerate(of_op.groupby("config", sort=False)):
            for backend, group in sorted(by_config.groupby("backend"), key=lambda kv: backend_sort_key(kv[0])):
                series = pd.to_numeric(group[column]).groupby(group["N"]).median().sort_index()
                label = " ".join(filter(None, [backend, config_label(config_dict(config), varying)]))
                (line,) = ax.plot(series.index, series.values, marker="o", label=figure_text(label),
                                  color=BACKEND_COLORS.get(backend),
                                  linestyle=LINESTYLES[i % len(LINESTYLES)])
                if limit_column is not None:
                    limit = pd.to_numeric(group[limit_column]).groupby(group["N"]).median().sort_index()
                    ax.plot(limit.index, limit.values, linestyle=":", color=line.get_color(),
                            label=figure_text(f"{label} limit"))
        ax.set(xscale="log", yscale="log", xlabel="N", ylabel=ylabel, title=figure_text(op))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def _errors(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with an error vs the reference, the reference itself left out (0 by definition)."""
    data = frame.assign(rel_err=pd.to_numeric(frame["rel_err"], errors="coerce"))
    data = data[data["rel_err"].notna() & (data["backend"] != REFERENCE_BACKEND)]
    # an exact agreement (error 0) would vanish from a log axis: show it at the floor
    return data.assign(rel_err=data["rel_err"].clip(lower=1e-17))


def plot_error_vs_blur(frame: pd.DataFrame, path: pathlib.Path):
    """Max rel. error (over N and seeds) vs blur; lines per backend and dtype; panel per op."""
    data = _errors(frame)
    data = data[data["blur"].notna()]
    ops = sorted(op for op, group in data.groupby("op") if group["blur"].nunique() > 1)
    if not ops:
        return None   # one blur per op: a plot of single points says nothing about blur
    fig, axes = _panels(len(ops))
    for ax, op in zip(axes, ops):
        of_op = data[data["op"] == op]
        for i, ((backend, dtype), group) in enumerate(of_op.groupby(["backend", "dtype"], dropna=False)):
            series = group.groupby("blur")["rel_err"].max().sort_index()
            ax.plot(series.index, series.values, marker="o", label=figure_text(f"{backend} {dtype}"),
                    color=BACKEND_COLORS.get(backend), linestyle=LINESTYLES[i % len(LINESTYLES)])
        ax.set(xscale="log", yscale="log", xlabel="blur", ylabel="max rel. error", title=figure_text(op))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_error_vs_offset(frame: pd.DataFrame, path: pathlib.Path):
    """Max rel. error vs offset (symmetric log axis: 0 included); lines per backend, dtype and
    setting; panel per op measured at two offsets or more (selection.offset_errors)."""
    data = offset_errors(frame)
    if data.empty:
        return None
    data = data.assign(rel_err=data["rel_err"].clip(lower=1e-17))   # an exact 0 on a log axis
    nonzero = data["offset"].abs()[data["offset"] != 0]
    ops = sorted(data["op"].unique())
    fig, axes = _panels(len(ops))
    colors = _backend_colors(data["backend"].unique())
    for ax, op in zip(axes, ops):
        of_op = data[data["op"] == op]
        styles = sorted(of_op.groupby(["dtype", "setting"]).groups)   # line style: dtype and setting
        lines = sorted(of_op.groupby(["backend", "dtype", "device", "setting"]),
                       key=lambda kv: backend_sort_key(kv[0][0]))
        for (backend, dtype, device, setting), group in lines:
            group = group.sort_values("offset")
            shown = "" if setting == "-" else f" {setting}"
            label = figure_text(f"{backend_label(backend, device)} {dtype}{shown}")
            style = LINESTYLES[styles.index((dtype, setting)) % len(LINESTYLES)]
            ax.plot(group["offset"], group["rel_err"], marker="o", label=label, color=colors[backend],
                    linestyle=style)
        ax.set_xscale("symlog", linthresh=float(nonzero.min()) if len(nonzero) else 1.0)
        ax.set(yscale="log", xlabel="offset", ylabel="max rel. error", title=figure_text(op))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


OTHER_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _backend_colors(backends) -> dict:
    """A colour per backend: the usual ones for ours, then distinct ones for the peers."""
    others = sorted(b for b in backends if b not in BACKEND_COLORS)
    return {**{b: OTHER_COLORS[i % len(OTHER_COLORS)] for i, b in enumerate(others)}, **BACKEND_COLORS}


def plot_error_vs_dtype(frame: pd.DataFrame, path: pathlib.Path):
    """Grouped bars: max rel. error per backend, one bar per dtype; panel per op."""
    data = _errors(frame)
    if data.empty:
        return None
    ops = sorted(data["op"].unique())
    fig, axes = _panels(len(ops))
    for ax, op in zip(axes, ops):
        table = data[data["op"] == op].groupby(["backend", "dtype"])["rel_err"].max().unstack("dtype")
        dtypes = sorted(table.columns)
        backends = sorted(table.index, key=backend_sort_key)
        width = 0.8 / max(1, len(dtypes))
        for j, dtype in enumerate(dtypes):
            values = [table.at[b, dtype] for b in backends]
            ax.bar([i + j * width for i in range(len(backends))], values, width, label=figure_text(dtype))
        ax.set_xticks([i + width * (len(dtypes) - 1) / 2 for i in range(len(backends))],
                      [figure_text(b) for b in backends])
        ax.set(yscale="log", ylabel="max rel. error", title=figure_text(op))
        ax.legend(fontsize="small")
    return save_figure(fig, path)
