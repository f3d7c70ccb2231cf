"""``kpbench report RESULTS_DIR [--out DIR]``: Markdown + HTML report of a results store.

Interactive charts (time, who wins where, accuracy vs time, memory, statuses), tables (time,
speed-up vs a baseline backend in the same dtype and device, memory, error, status counts),
the crossover map, the OOM frontier, PNG plots and reproduction figures, read from the
Parquet store alone.
"""
from __future__ import annotations

from kpbench.cli import add_verb, doc_body


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "report", run, description=doc_body(__doc__),
                      help="write report.md and a self-contained report.html from a results store")
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="results directory (with sweeps/)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default: RESULTS_DIR/report)")
    parser.add_argument("--baseline", default=None, metavar="BACKEND",
                        help="backend the speed-ups are computed against (default torch, the "
                             "dense backend)")
    parser.add_argument("--data", default=None, metavar="SOURCES",
                        help="only these data sources, comma-separated ('default': the default pair; "
                             "file:PATH as stored)")


def run(args) -> int:
    from kpbench.results.report import write_report
    from kpbench.results.selection import DEFAULT_BASELINE, load_sweeps

    data = [s.strip() for s in args.data.split(",") if s.strip()] if args.data else None
    html_path = write_report(args.results_dir, args.out, baseline=args.baseline or DEFAULT_BASELINE,
                             data=data)
    if load_sweeps(args.results_dir, columns=["key"]).empty:     # not every column again
        print(f"kpbench report: no sweep rows in {args.results_dir}; the report says so "
              "(and shows reproductions, if any)")
    print(f"wrote {html_path} and {html_path.with_name('report.md')}")
    return 0
