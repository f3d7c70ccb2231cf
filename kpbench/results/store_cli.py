"""``kpbench store VERB DIR``: look after a results store. One verb so far:

    kpbench store check results      # damaged parts and duplicated keys; exit 1 when any

Each verb is a ``(help, description, add_arguments, run)`` entry of :data:`VERBS`; a new
one (say ``quarantine``) is one more entry, its ``run(args) -> exit code`` beside it.
"""
from __future__ import annotations

import sys

CHECK_DESCRIPTION = (
    "Read every part file of every table of the store (each folder holding part-*.parquet "
    "files) and list the parts a read skips: unreadable (not Parquet, truncated, empty) or of "
    "another schema (a sweeps column of another type, no key or status column; for the other "
    "tables, columns that do not unify with the earlier parts). An older sweeps part that lacks "
    "columns added since is fine (they read as nulls). Then list the duplicated keys: a key "
    "stored more than once by ONE run (same run_id). Rows of one key from different runs are "
    "the store's history, not duplicates: a resumed sweep with --retry-failed, a sweep with "
    "--no-resume, a rerun into the same store each add rows under a new run_id, and report and "
    "compare take the latest, so such a store checks clean. Nothing is changed or deleted. "
    "Exit status: 0 clean, 1 damaged parts or duplicates found, 2 no such directory.")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "store", help="look after a results store (check: damaged parts, duplicated keys)",
        description="Commands on a results store (the folder a sweep writes: sweeps/, runs/, ...).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_text, description, add_arguments, run) in VERBS.items():
        verb = verbs.add_parser(name, help=help_text, description=description)
        add_arguments(verb)
        verb.set_defaults(func=run)


def _store_argument(parser) -> None:
    parser.add_argument("results_dir", metavar="DIR", help="results directory (or its sweeps/ folder)")


def run_check(args) -> int:
    from kpbench.results.store import ResultStore, duplicate_keys, printable, store_root

    root = store_root(args.results_dir)
    if not root.is_dir():
        print(f"kpbench store check: error: no results directory at {printable(str(root))}",
              file=sys.stderr)
        return 2
    store = ResultStore(root)
    found = 0
    for table in store.tables():
        damaged = store.damaged(table)
        duplicates = duplicate_keys(store.read(table, warn=False))   # damaged: listed here
        for part in damaged:
            print(f"damaged   {part}")
        for run_id, key, count in duplicates:
            print(f"duplicate {printable(table)}: key {printable(key)} stored {count} times by "
                  f"run {printable(run_id)}")
        print(f"table {printable(table)}: {len(store.parts(table))} parts, {len(damaged)} damaged, "
              f"{len(duplicates)} duplicated keys")
        found += len(damaged) + len(duplicates)
    if not store.tables():
        print(f"no tables (folders of part-*.parquet files) in {printable(str(root))}")
    print("store check: " + (f"{found} problem(s)" if found else "clean"))
    return 1 if found else 0


VERBS = {
    "check": ("list damaged part files and keys stored twice by one run; exit 1 when any",
              CHECK_DESCRIPTION, _store_argument, run_check),
}
