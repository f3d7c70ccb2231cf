"""``kpbench report RESULTS_DIR [--out DIR]``: Markdown + HTML report of a results store."""
from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write report.md and a self-contained report.html from a results store",
        description="Tables (time, speed-up vs numpy, memory, error, status counts), the "
                    "crossover map, the OOM frontier, plots and reproduction figures, read "
                    "from the Parquet store alone.")
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="results directory (with sweeps/)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory (default: RESULTS_DIR/report)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from kpbench.backends.base import KPBenchError
    from kpbench.results.report import load_sweeps, write_report

    try:
        html_path = write_report(args.results_dir, args.out)
        empty = load_sweeps(args.results_dir).empty
    except KPBenchError as exc:
        print(f"kpbench report: error: {exc}", file=sys.stderr)
        return 2
    if empty:
        print(f"kpbench report: no sweep rows in {args.results_dir}; the report says so "
              "(and shows reproductions, if any)")
    print(f"wrote {html_path} and {html_path.with_name('report.md')}")
    return 0
