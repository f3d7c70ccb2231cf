"""The report of a results store: Markdown + self-contained HTML, from the Parquet alone.

``write_report(results_dir)`` reads ``results_dir/sweeps`` (and the reproduction tables
when present) and writes ``report.md``, ``report.html`` and the plots as PNG files into
``results_dir/report`` (or ``out_dir``). The HTML embeds every image as a base64 data URI,
so it can be mailed or attached on its own.

Sections: runs (metadata), status counts, the crossover map (which backend is fastest at
each N, and where the lead changes), the OOM frontier (largest N each backend completed
per device), one backend x N table per op and configuration, plots, reproductions.
Partial results (failed points, missing ops, a single backend, no rows at all) give a
shorter report with a clear message, never a traceback.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import pathlib
from dataclasses import dataclass, field

import pandas as pd

from kpbench.backends.base import KPBenchError, format_bytes
from kpbench.results.schema import COLUMNS, STATUSES
from kpbench.results.store import SWEEPS, ResultStore, latest_per_key

# What, besides op, backend and N, makes two rows the same benchmark configuration.
# "M" enters as M_rel ("M=N" or the value of M) so that the usual M = N sweep is one group.
CONFIG_COLUMNS = ["kernel", "M_rel", "D", "blur", "p", "reach", "iters", "scaling", "dtype", "device"]
# The numpy reference is float64 on the CPU: speed-ups compare against it whatever the
# dtype and device of the other backend.
REFERENCE_BACKEND = "numpy"
REPRODUCTION_TABLES = ("flow_1d", "flow_2d", "model_fitting")
BACKEND_ORDER = ("numpy", "torch", "keops", "cuda")


# -- loading ----------------------------------------------------------------------------

def load_sweeps(path: str | os.PathLike) -> pd.DataFrame:
    """Sweep rows from a results dir (with ``sweeps/``), a sweeps dir, or one Parquet file.

    One row per point key (the latest run wins, as in the store), every schema column present.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise KPBenchError(f"no results at {path}: the path does not exist")
    if (path / SWEEPS).is_dir():
        frame = ResultStore(path).read(SWEEPS)
    elif path.is_dir() and path.name == SWEEPS:
        frame = ResultStore(path.parent).read(SWEEPS)
    elif path.is_dir() and any(path.glob("*.parquet")):
        frame = pd.read_parquet(path)
    elif path.is_file() and path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.is_dir():
        frame = pd.DataFrame(columns=COLUMNS)
    else:
        raise KPBenchError(f"{path} is neither a results directory nor a Parquet file")
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame


def select_run(frame: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    """Rows of one run (``run_id`` exact or a unique prefix; "latest" = the last started run),
    or with ``None`` all runs; then one row per point key, the latest winning."""
    if run_id is not None and not frame.empty:
        runs = _runs_in_order(frame)
        if run_id == "latest":
            chosen = runs[-1]
        else:
            matches = [r for r in runs if r == run_id] or [r for r in runs if r.startswith(run_id)]
            if len(matches) != 1:
                known = ", ".join(runs) or "none"
                what = "no run" if not matches else "an ambiguous run id prefix"
                raise KPBenchError(f"{what} {run_id!r} in these results; runs: {known}")
            chosen = matches[0]
        frame = frame[frame["run_id"] == chosen]
    elif run_id is not None:
        raise KPBenchError(f"no run {run_id!r}: there are no sweep rows")
    return latest_per_key(frame).reset_index(drop=True)


def _runs_in_order(frame: pd.DataFrame) -> list[str]:
    started = frame.groupby("run_id", dropna=True)["started_at"].min().sort_values(kind="stable")
    return [str(r) for r in started.index]


def load_table(results_dir: pathlib.Path, table: str) -> pd.DataFrame:
    return ResultStore(results_dir).read(table)


# -- formatting -------------------------------------------------------------------------

def fmt_n(n) -> str:
    """1000 -> 1e3, 4000 -> 4e3, 200 -> 200, 1500 -> 1500."""
    n = int(n)
    if n >= 1000:
        exponent = int(math.floor(math.log10(n)))
        mantissa, rest = divmod(n, 10**exponent)
        if rest == 0:
            return f"{mantissa}e{exponent}"
    return str(n)


def fmt_seconds(t) -> str:
    if _missing(t):
        return "-"
    t = float(t)
    if t < 1e-3:
        return f"{t * 1e6:.3g} µs"
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    return f"{t:.3g} s"


def fmt_bytes(n) -> str:
    return "-" if _missing(n) else format_bytes(float(n))


def fmt_err(e) -> str:
    return "-" if _missing(e) else f"{float(e):.1e}"


def fmt_ratio(r) -> str:
    return "-" if _missing(r) else f"{float(r):.3g}x"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _value(v):
    """A plain Python value, with NaN/NA -> None (for grouping keys and labels)."""
    if _missing(v):
        return None
    if hasattr(v, "item") and not isinstance(v, pd.Timestamp):
        v = v.item()  # numpy scalar -> int/float/str
    return v


def config_label(config: dict, only: list[str] | None = None, op: str | None = None) -> str:
    """'gaussian D=3 blur=0.1 p=2 float32 cpu' from a config dict; nulls are left out, and so
    is a kernel that only repeats the op's family (softmin/softmin, sinkhorn_grad/sinkhorn)."""
    parts = []
    for name in CONFIG_COLUMNS:
        value = config.get(name)
        if value is None or (only is not None and name not in only):
            continue
        if name == "kernel" and op is not None and op.startswith(str(value)):
            continue
        if name in ("kernel", "dtype", "device"):
            parts.append(str(value))
        elif name == "M_rel":
            if value != "M=N":
                parts.append(f"M={fmt_n(value)}")
        elif name in ("D", "p", "iters"):
            parts.append(f"{name}={int(value)}")
        else:
            parts.append(f"{name}={float(value):g}")
    return " ".join(parts)


def point_label(row) -> str:
    """One line naming a sweep point: op backend config N (seed if not 0) (sweep kind)."""
    config = row_config(row)
    seed, kind = _value(row.get("seed")), _value(row.get("sweep"))
    text = f"{row['op']} {row['backend']} {config_label(config, op=row['op'])} N={fmt_n(row['N'])}"
    text += f" seed={int(seed)}" if seed not in (None, 0) else ""
    return text + (f" ({kind})" if kind else "")


def row_config(row) -> dict:
    config = {name: _value(row.get(name)) for name in CONFIG_COLUMNS if name != "M_rel"}
    n, m = _value(row.get("N")), _value(row.get("M"))
    config["M_rel"] = "M=N" if m is None or m == n else int(m)
    return config


# -- analysis ---------------------------------------------------------------------------

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
    """What happened at one (op, config, backend, N), over seeds."""
    status: str
    time: float | None = None
    mem: float | None = None
    err: float | None = None
    speedup: float | None = None


def cells(frame: pd.DataFrame) -> dict[tuple, Cell]:
    """(op, config, backend, N) -> Cell: median time, max memory and error of the ok rows."""
    frame = frame if "config" in frame else with_config(frame)
    result: dict[tuple, Cell] = {}
    for key, group in frame.groupby(["op", "config", "backend", "N"], sort=False):
        ok = group[group["status"] == "ok"]
        if ok.empty:
            result[key] = Cell(status=group["status"].mode().iloc[0])
            continue
        result[key] = Cell(
            status="ok",
            time=_value(pd.to_numeric(ok["time_median_s"]).median()),
            mem=_value(pd.to_numeric(ok["peak_mem_bytes"]).max()),
            err=_value(pd.to_numeric(ok["rel_err"]).max()),
        )
    _add_speedups(result)
    return result


def _reference_key(op, config: tuple, n) -> tuple:
    c = config_dict(config)
    return (op, n) + tuple(c[name] for name in CONFIG_COLUMNS if name not in ("dtype", "device"))


def _add_speedups(table: dict[tuple, Cell]) -> None:
    reference = {}
    for (op, config, backend, n), cell in table.items():
        if backend == REFERENCE_BACKEND and cell.time:
            reference.setdefault(_reference_key(op, config, n), []).append(cell.time)
    for (op, config, backend, n), cell in table.items():
        ref = reference.get(_reference_key(op, config, n))
        if ref and cell.time:
            cell.speedup = float(pd.Series(ref).median()) / cell.time


def backend_sort_key(name: str):
    return (BACKEND_ORDER.index(name) if name in BACKEND_ORDER else len(BACKEND_ORDER), name)


def crossover_lines(frame: pd.DataFrame) -> list[str]:
    """For each (op, config): which backend is fastest at each N, with the lead changes.

    e.g. 'kernel_product gaussian D=3 blur=0.1 float32 cpu: keops fastest at N<=1e3,
    torch at 1e4, keops from 1e5'.
    """
    table = cells(frame)
    groups: dict[tuple, dict] = {}
    for (op, config, backend, n), cell in table.items():
        groups.setdefault((op, config), {}).setdefault(n, {})[backend] = cell
    lines = []
    for (op, config), by_n in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        head = f"{op} {config_label(config_dict(config), op=op)}".strip()
        backends = sorted({b for per_n in by_n.values() for b in per_n}, key=backend_sort_key)
        winners = []
        for n in sorted(by_n):
            timed = [(c.time, b) for b, c in by_n[n].items() if c.status == "ok" and c.time is not None]
            if timed:
                winners.append((n, min(timed)[1]))
        if not winners:
            completed = any(c.status == "ok" for per_n in by_n.values() for c in per_n.values())
            lines.append(f"{head}: no timings (only memory/accuracy rows)" if completed else
                         f"{head}: no backend completed any N ({', '.join(backends)} tried)")
            continue
        text = _describe_runs(_runs(winners))
        if len(backends) == 1:
            text += f" (only {backends[0]} ran)"
        lines.append(f"{head}: {text}")
    return lines


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
        rows.append([str(_value(k)) if _value(k) is not None else "-" for k in key]
                    + [n_where(["ok"], max), n_where(REFUSED, min), n_where(["timeout"], min)])
    return sorted(rows, key=lambda r: (r[0], backend_sort_key(r[1]), r[2], r[3]))


def status_counts(frame: pd.DataFrame) -> list[list[str]]:
    """Rows [op, backend, count per status...] over all configs."""
    rows = []
    for (op, backend), group in frame.groupby(["op", "backend"], sort=False):
        counts = group["status"].value_counts()
        rows.append([op, backend] + [str(int(counts.get(s, 0))) for s in STATUSES])
    return sorted(rows, key=lambda r: (r[0], backend_sort_key(r[1])))


def op_tables(frame: pd.DataFrame, op: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """For one op, per configuration (dtype and device apart): (title, header, rows) of a
    backend x N table with, per backend/dtype/device, the rows median time / speed-up vs
    numpy / peak memory / max rel. error. Failed cells show their status."""
    by_table: dict[tuple, dict] = {}
    for (o, config, backend, n), cell in cells(frame).items():
        if o != op:
            continue
        c = config_dict(config)
        shared = tuple(None if k in ("dtype", "device") else v for k, v in c.items())
        by_table.setdefault(shared, {})[(backend, c["dtype"], c["device"], n)] = cell
    result = []
    for shared, entries in sorted(by_table.items(), key=lambda kv: str(kv[0])):
        ns = sorted({key[3] for key in entries})
        lines = sorted({key[:3] for key in entries}, key=lambda k: (backend_sort_key(k[0]), str(k[1:])))
        header = ["backend", "metric"] + [f"N={fmt_n(n)}" for n in ns]
        rows = []
        for line in lines:
            row_cells = [entries.get((*line, n)) for n in ns]
            name = " ".join(str(part) for part in line if part is not None)
            rows.append([name, "median time"] + [_time_text(c) for c in row_cells])
            if not any(c is not None and c.status == "ok" for c in row_cells):
                continue   # only failures: their statuses say it all
            rows.append(["", "speed-up vs numpy"] + [_ok_text(c, "speedup", fmt_ratio) for c in row_cells])
            rows.append(["", "peak memory"] + [_ok_text(c, "mem", fmt_bytes) for c in row_cells])
            rows.append(["", "max rel. error"] + [_ok_text(c, "err", fmt_err) for c in row_cells])
        result.append((config_label(config_dict(shared), op=op) or "(default)", header, rows))
    return result


def _time_text(cell: Cell | None) -> str:
    if cell is None:
        return ""
    return fmt_seconds(cell.time) if cell.status == "ok" else cell.status


def _ok_text(cell: Cell | None, attr: str, fmt) -> str:
    return fmt(getattr(cell, attr)) if cell is not None and cell.status == "ok" else ""


RUNS_HEADER = ["run", "sweep", "executor", "started (UTC)", "rows", "host", "cpu", "gpu",
               "git", "torch", "pykeops", "cxxflags"]


def runs_table(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for run_id, group in frame.groupby("run_id", dropna=False, sort=False):
        first = group.iloc[0]
        started = _value(group["started_at"].min())
        rows.append([
            str(run_id)[:12], _text(first["sweep"]), _text(first["executor"]),
            started.strftime("%Y-%m-%d %H:%M:%S") if started is not None else "-",
            str(len(group)), _text(first["host"]), _text(first["cpu"]), _text(first["gpu"]),
            _text(first["git_commit"])[:10], _text(first["torch_version"]),
            _text(first["pykeops_version"]), _text(first["cxxflags"]) or "-",
        ])
    return sorted(rows, key=lambda r: r[3])


def _text(v) -> str:
    v = _value(v)
    return "-" if v is None else str(v)


# -- reproductions ----------------------------------------------------------------------

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
        row = [_text(k) for k in key] + [str(len(group))]
        if step_col:
            row.append(_text(last[step_col]))
        if has_status:
            row.append(_text(last["status"]))
        row += [_fmt_number(last[c]) for c in value_cols]
        rows.append(row)
    same = ", ".join(f"{c}={_fmt_number(frame[c].iloc[0])}" for c in constant)
    return same, header, rows


def _fmt_number(v) -> str:
    v = _value(v)
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- the document -----------------------------------------------------------------------

@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Lines:
    lines: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: pathlib.Path
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def build_document(results_dir: pathlib.Path, out_dir: pathlib.Path) -> Document:
    from kpbench.results import plots

    frame = latest_per_key(load_sweeps(results_dir))
    doc = Document(title="kpbench report")
    doc.add(Para(f"Results: `{results_dir}` — generated "
                 f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} from the Parquet store."))
    if frame.empty:
        doc.add(Heading("Sweeps"),
                Para(f"No sweep results found in `{results_dir / SWEEPS}`: nothing to tabulate. "
                     "Run `kpbench sweep` (or `kpbench demo`) first."))
    else:
        _add_sweep_sections(doc, with_config(frame), out_dir, plots)
    _add_reproductions(doc, results_dir, out_dir)
    return doc


def _add_sweep_sections(doc: Document, frame: pd.DataFrame, out_dir: pathlib.Path, plots) -> None:
    doc.add(Heading("Runs"), Table(RUNS_HEADER, runs_table(frame)))
    doc.add(Heading("Status counts"), Table(["op", "backend", *STATUSES], status_counts(frame)))
    doc.add(Heading("Crossover map"),
            Para("Fastest backend (lowest median time among ok points) at each N, per op and "
                 "configuration; the lead changes where a new backend is named."),
            Lines(crossover_lines(frame)))
    doc.add(Heading("OOM frontier"),
            Para("Largest N each backend completed, and the first N where it was refused (memory "
                 "pre-flight: status skipped) or ran out of memory (oom), or timed out; per op, "
                 "device and dtype."),
            Table(FRONTIER_HEADER, oom_frontier(frame)))
    doc.add(Heading("Results per op"))
    for op in sorted(frame["op"].dropna().unique()):
        doc.add(Heading(op, 3))
        for title, header, rows in op_tables(frame, op):
            doc.add(Para(f"**{title}**"), Table(header, rows))
    doc.add(Heading("Plots"))
    figures = plots.sweep_figures(frame, out_dir)
    if not figures:
        doc.add(Para("No ok points to plot."))
    for path, caption in figures:
        doc.add(Image(path, caption))


def _add_reproductions(doc: Document, results_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    tables = {name: load_table(results_dir, name) for name in REPRODUCTION_TABLES}
    tables = {name: t for name, t in tables.items() if not t.empty}
    figure_dir = results_dir / "figures"
    figures = sorted(p for p in figure_dir.rglob("*.png")
                     if out_dir not in p.parents) if figure_dir.is_dir() else []
    if not tables and not figures:
        return
    doc.add(Heading("Reproductions"))
    for name, table in tables.items():
        same, header, rows = reproduction_summary(table)
        doc.add(Heading(name, 3),
                Para("Values at the last step of each run" + (f"; in every row: {same}." if same else ".")),
                Table(header, rows))
    for path in figures:
        doc.add(Image(path, str(path.relative_to(results_dir))))


def render_markdown(doc: Document, out_dir: pathlib.Path) -> str:
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            out += [block.text, ""]
        elif isinstance(block, Lines):
            out += [f"- {line}" for line in block.lines] + [""]
        elif isinstance(block, Table):
            out += _markdown_table(block) + [""]
        elif isinstance(block, Image):
            link = pathlib.Path(os.path.relpath(block.path, out_dir)).as_posix()
            out += [f"![{block.caption}]({link})", ""]
    return "\n".join(out)


def _markdown_table(table: Table) -> list[str]:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    if not table.rows:
        return ["(no rows)"]
    return [line(table.header), line(["---"] * len(table.header))] + [line(r) for r in table.rows]


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%}figcaption{color:#555;font-size:90%}"""


def render_html(doc: Document) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(doc.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Lines):
            out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in block.lines) + "</ul>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
                       f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    """The two Markdown inline marks the report uses: **bold** and `code`."""
    parts = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: Table) -> str:
    if not table.rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Write report.md, report.html and the plot PNGs; returns the path of report.html."""
    results_dir = pathlib.Path(results_dir)
    if not results_dir.is_dir():
        raise KPBenchError(f"no results directory at {results_dir}")
    out_dir = pathlib.Path(out_dir) if out_dir is not None else results_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build_document(results_dir, out_dir)
    (out_dir / "report.md").write_text(render_markdown(doc, out_dir), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(doc), encoding="utf-8")
    return html_path


__all__ = ["write_report", "load_sweeps", "select_run", "crossover_lines", "oom_frontier",
           "status_counts", "op_tables", "point_label", "fmt_n"]
