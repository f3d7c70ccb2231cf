"""``kpbench compare BASELINE NEW [--threshold 1.1]``: exit 1 on a time/memory/status regression.

Match the sweep points of BASELINE and NEW by key and print the ratios new/baseline of
median time, peak memory and relative error. Exit status 1 when a time or memory ratio
exceeds the threshold (for time: and the two timing distributions differ, by a Mann-Whitney
rank test on the samples or, without enough samples, non-overlapping inter-quartile ranges)
or a point that was ok fails in NEW; 0 otherwise; 2 on bad input, including rows measured on
different hosts, GPUs or library versions (unless --allow-env-mismatch) and ok speed rows
without a usable time (median or a sample missing, NaN, infinite or not positive: named by
run, key and column). Relative errors are compared only when both exceed --err-floor and
never fail the comparison.
"""
from __future__ import annotations

import dataclasses
import pathlib

from kpbench.cli import add_verb, doc_body


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "compare", run, description=doc_body(__doc__),
                      help="compare two runs point by point; exit 1 on a regression")
    for side in ("baseline", "new"):
        parser.add_argument(side, metavar=side.upper(), help="results dir or sweeps Parquet dir")
    parser.add_argument("--threshold", type=float, default=None,
                        help="regression factor (default 1.1): ratio > T regresses, < 1/T improves")
    parser.add_argument("--run-id", nargs=2, metavar=("BASE_RUN", "NEW_RUN"), default=None,
                        help="pick one run on each side (id, unique prefix, 'latest', or 'all'); "
                             "e.g. --run-id 3fa2 latest to compare two runs of one store")
    parser.add_argument("--only-changed", action="store_true", help="list only points that changed")
    parser.add_argument("--err-floor", type=float, default=None,
                        help="compare relative errors only above this (default 1e-12)")
    parser.add_argument("--mem-floor", type=float, default=None,
                        help="compare peak memory only when one side reaches this many bytes "
                             "(default 1 MiB)")
    parser.add_argument("--p-threshold", type=float, default=None,
                        help="significance level of the rank test (default 0.002, as asv)")
    parser.add_argument("--allow-env-mismatch", action="store_true",
                        help="compare rows from different hosts, GPUs or torch/pykeops/numpy "
                             "versions (refused by default)")
    parser.add_argument("--page", metavar="HTML", default=None,
                        help="where the comparison page goes (default: NEW/report/compare.html "
                             "when NEW is a results directory)")
    parser.add_argument("--no-page", action="store_true", help="print the table only")


def run(args) -> int:
    from kpbench.results import compare as cmp
    from kpbench.results.layout import compare_page

    runs = args.run_id or ("all", "all")
    sides = load_sides((args.baseline, args.new), runs)
    result = cmp.compare(*sides, **dataclasses.asdict(gate_settings(args)),
                         allow_env_mismatch=args.allow_env_mismatch)
    print(f"baseline: {args.baseline} (run {runs[0]})  new: {args.new} (run {runs[1]})")
    for name, side in zip(("baseline", "new"), sides):
        made_up = int(side["synthetic"].eq(True).sum()) if "synthetic" in side else 0
        if made_up:
            print(f"warning: {made_up} of the {name}'s {len(side)} rows are synthetic (made by "
                  "scripts/make_store.py): never measured, their verdicts test kpbench alone")
    print(cmp.format_comparison(result, only_changed=args.only_changed))
    from kpbench.results.fingerprint import NOTES_COLUMNS, reproducibility_notes   # inputs, values, environments

    wanted = NOTES_COLUMNS + cmp.LABEL_COLUMNS
    notes = [side[[c for c in dict.fromkeys(wanted) if c in side]] for side in sides]
    print("\n".join(reproducibility_notes(args.baseline, notes[0], args.new, notes[1])))
    page = None if args.no_page else (args.page or compare_page(args.new))
    if page is not None:
        from kpbench.results.compare_page import write_page

        print(f"page: {write_page(result, page, f'{args.baseline} (run {runs[0]})', f'{args.new} (run {runs[1]})')}")
    return 1 if result.failed else 0


def gate_settings(args):
    """The GateSettings of the flags given (the others: GateSettings' own defaults)."""
    from kpbench.results.compare import GateSettings

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(GateSettings)}
    return GateSettings(**{name: value for name, value in given.items() if value is not None})


def load_sides(paths: tuple[str, str], runs: tuple[str, str]) -> list:
    """The rows of both sides (selection.load_run), only the columns compare and its notes
    use; read once when both name the same rows (a store against itself, all vs all)."""
    from kpbench.results.compare import ROW_COLUMNS, SAMPLES
    from kpbench.results.fingerprint import NOTES_COLUMNS
    from kpbench.results.selection import load_run

    columns = list(dict.fromkeys(ROW_COLUMNS + NOTES_COLUMNS + ["started_at", "synthetic", SAMPLES]))
    first = load_run(paths[0], None if runs[0] == "all" else runs[0], columns)
    if runs[0] == runs[1] and pathlib.Path(paths[0]).resolve() == pathlib.Path(paths[1]).resolve():
        return [first, first]
    return [first, load_run(paths[1], None if runs[1] == "all" else runs[1], columns)]



