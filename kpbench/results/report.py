"""The report of a results store: Markdown + one self-contained HTML page, from the Parquet alone.

``write_report(results_dir)`` reads ``results_dir/sweeps`` (and the reproduction tables
when present) and writes ``report.md``, ``report.html`` and the plots as PNG files into
``results_dir/report`` (or ``out_dir``).

The report is built in one direction, each step in its own module:

1. data selection (:mod:`kpbench.results.selection`): rows, configurations, cells;
2. tables and figures (:mod:`kpbench.results.tables`, :mod:`kpbench.results.plots` for
   PNGs, :mod:`kpbench.results.interactive` for the interactive charts);
3. renderers (:mod:`kpbench.results.document`): Markdown and HTML.

Sections: runs (metadata), status counts, the crossover map (which backend is fastest at
each N, and where the lead changes), the OOM frontier, one backend x N table per op and
configuration (speed-ups against a chosen baseline backend, same dtype and device only),
plots, the regret of backend="auto" (when the store holds a calibration), reproductions. Partial results (failed points, missing ops, a single backend, no
rows at all) give a shorter report with a clear message, never a traceback.

The results folder is data (see :mod:`kpbench.results.files`): a figure is embedded only
when it is a regular file inside the folder (the report lists those it refused), and each
output replaces whatever is at its name; a ``report`` folder that is a link is refused.
"""
from __future__ import annotations

import datetime as _dt
import os
import pathlib

import pandas as pd

from kpbench.errors import KPBenchError
from kpbench.results import datasets_view, files, layout, plots, regret, side_by_side, tables
from kpbench.results.document import (
    Bold, Code, Details, Document, Heading, Image, Lines, Para, Table, render_html, render_markdown,
)
from kpbench.results.schema import STATUSES
from kpbench.results.selection import DEFAULT_BASELINE, load_table, sweep_frame
from kpbench.results.store import SWEEPS, ResultStore, store_root

REPRODUCTION_TABLES = ("flow_1d", "flow_2d", "model_fitting")


def build_document(results_dir: pathlib.Path, out_dir: pathlib.Path,
                   baseline: str = DEFAULT_BASELINE, interactive: bool = True,
                   data: list[str] | None = None) -> Document:
    frame = sweep_frame(results_dir)
    if data and not frame.empty:   # only these data sources ('default': the default pair)
        frame = datasets_view.filter_data(frame, data)
    damaged = _damaged_parts(results_dir)
    doc = Document(title="kpbench report")
    doc.add(Para(["Results: ", Code(str(results_dir)), " — generated "
                  f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} from the Parquet store."]))
    if frame.empty:
        doc.add(Heading("Sweeps"),
                Para(["No sweep results found in ", Code(str(results_dir / SWEEPS)),
                      ": nothing to tabulate. Run ", Code("kpbench sweep"), " (or ",
                      Code("kpbench demo"), ") first."]), *damaged)
    else:
        doc.add(*_synthetic_warning(frame))
        regret_rows = _regret(results_dir, frame)
        if interactive:
            _add_interactive(doc, frame, baseline, regret_rows)
        _add_sweep_sections(doc, frame, out_dir, baseline, damaged)
        if regret_rows is not None:
            _add_auto(doc, regret_rows)
    _add_reproductions(doc, results_dir, out_dir)
    return doc


def _synthetic_warning(frame: pd.DataFrame) -> list:
    """A block naming the rows scripts/make_store.py made up (none: no block)."""
    made_up = int(frame["synthetic"].eq(True).sum()) if "synthetic" in frame else 0
    if not made_up:
        return []
    return [Para([Bold(f"{made_up} of {len(frame)} rows are synthetic"),
                  " (made by scripts/make_store.py to test the results layer at scale): their "
                  "times, memory and errors were never measured."])]


def _damaged_parts(results_dir: pathlib.Path) -> list:
    """Blocks naming the store's damaged parts, which every read skipped (none: no blocks)."""
    store = ResultStore(store_root(results_dir))
    damaged = [str(part) for table in store.tables() for part in store.damaged(table, as_last_read=True)]
    if not damaged:
        return []
    return [Para([Bold(f"{len(damaged)} damaged part file(s) skipped"),
                  ": their rows are not in this report; the files are left as they are (",
                  Code("kpbench store check"), " lists them)."]),
            Lines(damaged)]


def _regret(results_dir: pathlib.Path, frame: pd.DataFrame) -> list[dict] | None:
    table = regret.store_table(results_dir)
    return None if table is None else regret.regret_records(frame, table)


def _add_interactive(doc: Document, frame: pd.DataFrame, baseline: str, regret_rows) -> None:
    from kpbench.results import interactive

    doc.head_html = interactive.head_html()
    doc.add(Heading("Explore"), *interactive.blocks(frame, baseline, regret_rows))


def _add_auto(doc: Document, records: list[dict]) -> None:
    doc.add(Heading('backend="auto"'),
            Para(["Regret: the median time of the backend auto picks (from ",
                  Code(str(regret.TABLE_IN_STORE)), ", written by ", Code("kpbench calibrate"),
                  ") over the fastest backend's, at every point where two or more of its "
                  f"candidates were timed; goal: median <= {regret.GOAL}x. On the calibration "
                  "points the rows are the calibration's own, so a regret above 1 there comes "
                  "from the rule (a refusal, the nearest D or dtype), not from noise; the unseen "
                  "points are the test."]),
            Table(regret.SUMMARY_HEADER, regret.regret_summary(records)))


def _add_sweep_sections(doc: Document, frame: pd.DataFrame, out_dir: pathlib.Path,
                        baseline: str, damaged: list) -> None:
    doc.add(Heading("Runs"), Table(tables.RUNS_HEADER, tables.runs_table(frame)))
    doc.add(Heading("Status counts"), Table(["op", "backend", *STATUSES], tables.status_counts(frame)),
            *damaged)
    doc.add(Heading("Crossover map"),
            Para("Fastest backend (lowest median time among ok points) at each N, per op and "
                 "configuration, where two or more backends were timed; the lead changes where "
                 "a new backend is named."),
            Lines(tables.crossover_lines(frame)))
    _add_side_by_side(doc, frame, out_dir)
    doc.add(Heading("OOM frontier"),
            Para("Largest N each backend completed, and the first N where it was refused (memory "
                 "pre-flight: status skipped) or ran out of memory (oom), or timed out; per op, "
                 "device and dtype."),
            Table(tables.FRONTIER_HEADER, tables.oom_frontier(frame)))
    doc.add(Heading("Results per op"),
            Para(f"Speed-ups are {baseline}'s median time over each backend's, in the same op, "
                 "configuration, dtype and device; rows a table has no value for are left out."))
    unconverged = tables.unconverged_truths(frame)
    if unconverged:
        doc.add(Para([Bold("Truth not converged"), ": these accuracy rows compare with a float64 "
                      "reference that stopped before its tolerance; their errors are good only "
                      "down to the truth's own (column truth_marginal_err):"]), Lines(unconverged))
    for op in sorted(frame["op"].dropna().unique()):
        doc.add(Heading(op, 3))
        for title, header, rows in tables.op_tables(frame, op, baseline):
            doc.add(Para([Bold(title)]), Table(header, rows))
    _add_offsets(doc, frame)
    doc.add(*datasets_view.blocks(frame))
    doc.add(Heading("Plots"))
    figures = plots.sweep_figures(frame, out_dir)
    if not figures:
        doc.add(Para("No ok points to plot."))
    doc.add(Details("Static figures (PNG, for papers)", [Image(p, c) for p, c in figures]))


def _add_offsets(doc: Document, frame: pd.DataFrame) -> None:
    header, rows = tables.offset_table(frame)
    if not rows:
        return
    doc.add(Heading("Error vs offset", 3),
            Para(["Both clouds moved by offset·(1, …, 1) (", Code("--offset"), "); every input rounded "
                  "to the row's dtype, and the float64 truth computed on those same numbers, so the "
                  "error is the arithmetic's, not the rounding of the coordinates'. Max. relative "
                  "error over N and seeds; rows apart where another axis varies (setting); the "
                  "truth backend (numpy, float64: 0 by definition) left out (figure ",
                  Code("error_vs_offset.png"), " below)."]),
            Table(header, rows))


def _add_side_by_side(doc: Document, frame: pd.DataFrame, out_dir: pathlib.Path) -> None:
    """Libraries side by side (:mod:`kpbench.results.side_by_side`), one view per op and
    device, at the N where the most backends have results."""
    chosen = side_by_side.choices(frame)
    if not chosen:
        return
    doc.add(Heading("Libraries side by side"),
            Para("Every backend and peer library at one op, N and device (the N where the most "
                 "of them have results): median time, relative error vs the converged float64 "
                 "truth, gradient error vs finite differences, peak memory, iterations, first "
                 "call (compilation); 'Pareto' marks the rows no other row beats in both time "
                 "and error."))
    for index, (op, device, n) in enumerate(chosen):   # op and device are data: not in names
        rows = side_by_side.view(frame, op, device, n)
        doc.add(Heading(side_by_side.title(op, device, n), 3),
                Table(side_by_side.HEADER, side_by_side.table_rows(rows)))
        path = side_by_side.plot(rows, op, device, n, out_dir / f"side_by_side_{index}.png")
        if path is not None:
            doc.add(Image(path, f"Median time vs relative error, {side_by_side.title(op, device, n)}"))


def _add_reproductions(doc: Document, results_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    found = {name: load_table(results_dir, name) for name in REPRODUCTION_TABLES}
    found = {name: t for name, t in found.items() if not t.empty}
    figures, refused = files.figures(results_dir, skip=out_dir)
    if not found and not figures and not refused:
        return
    doc.add(Heading("Reproductions"))
    for name, table in found.items():
        same, header, rows = tables.reproduction_summary(table)
        doc.add(Heading(name, 3),
                Para("Values at the last step of each run" + (f"; in every row: {same}." if same else ".")),
                Table(header, rows))
    for path, name in figures:
        doc.add(Image(path, name))
    if refused:
        doc.add(Para("Figures not embedded (the report embeds only regular files inside the "
                     "results folder):"), Lines(refused))


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 baseline: str = DEFAULT_BASELINE, interactive: bool = True,
                 data: list[str] | None = None) -> pathlib.Path:
    """Write report.md, report.html and the plot PNGs; returns the path of report.html."""
    results_dir = pathlib.Path(results_dir)
    if not results_dir.is_dir():
        raise KPBenchError(f"no results directory at {results_dir}")
    link = layout.report_dir(results_dir)
    if out_dir is None and link.is_symlink():
        raise KPBenchError(f"{link} is a link (to {os.readlink(link)!r}): the report is not written "
                           "through it; pass --out DIR to write it elsewhere")
    out_dir = pathlib.Path(out_dir) if out_dir is not None else link
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build_document(results_dir, out_dir, baseline, interactive, data)
    files.replace_file(out_dir / "report.md", render_markdown(doc, out_dir).encode("utf-8"))
    return files.replace_file(out_dir / "report.html", render_html(doc).encode("utf-8"))


__all__ = ["write_report", "build_document", "REPRODUCTION_TABLES"]
