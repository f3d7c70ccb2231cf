"""``kpbench store VERB DIR``: look after a results store.

    kpbench store check results      # parts, rows, damaged parts and duplicated keys; exit 1 when any
    kpbench store compact results    # merge each run's parts into one (see kpbench.results.compact)

Each verb is a ``(help, description, add_arguments, run)`` entry of :data:`VERBS`; a new
one (say ``quarantine``) is one more entry, its ``run(args) -> exit code`` beside it.
"""
from __future__ import annotations

from kpbench.cli import add_verb

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
    "Each table's line counts its parts and rows (and the parts an interrupted compaction left, "
    "which reads skip and 'kpbench store compact' removes). "
    "Exit status: 0 clean, 1 damaged parts or duplicates found, 2 no such directory.")

COMPACT_DESCRIPTION = (
    "Merge the part files of every table into one part per run (a sweep writes a part every "
    "few points; each costs every read an open). The new parts are written and renamed before "
    "the old ones are removed, and name the parts they replace, so a reader at any moment, or "
    "after a kill, reads every row once; running it again finishes an interrupted compaction "
    "and leaves a compacted store as it is. Damaged parts are left as they are. Holds the "
    "store's sweep lock (refused while a sweep writes). Exit status: 0 done, 2 no such "
    "directory or the store is busy.")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "store", help="look after a results store (check: parts, rows, damage; compact: merge parts)",
        description="Commands on a results store (the folder a sweep writes: sweeps/, runs/, ...).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_text, description, add_arguments, run) in VERBS.items():
        add_arguments(add_verb(verbs, name, run, help=help_text, description=description))


def _store_argument(parser) -> None:
    parser.add_argument("results_dir", metavar="DIR", help="results directory (or its sweeps/ folder)")


def _open_store(args):
    """The store of ``args.results_dir``; KPBenchError when there is none."""
    from kpbench.errors import KPBenchError
    from kpbench.results.store import ResultStore, printable, store_root

    root = store_root(args.results_dir)
    if not root.is_dir():
        raise KPBenchError(f"no results directory at {printable(str(root))}")
    return ResultStore(root)


def run_check(args) -> int:
    from kpbench.results.store import duplicate_keys, printable, visible_parts

    store = _open_store(args)
    root = store.root
    found = 0
    for table in store.tables():
        damaged = store.damaged(table)
        frame = store.read(table, warn=False, columns=["key", "run_id"])   # damaged: listed here
        duplicates = duplicate_keys(frame)
        leftovers = len(visible_parts(*store.listing(table))[1])
        for part in damaged:
            print(f"damaged   {part}")
        for run_id, key, count in duplicates:
            print(f"duplicate {printable(table)}: key {printable(key)} stored {count} times by "
                  f"run {printable(run_id)}")
        print(f"table {printable(table)}: {len(store.parts(table))} parts, {len(frame)} rows, "
              f"{len(damaged)} damaged, {len(duplicates)} duplicated keys"
              + (f", {leftovers} left by an interrupted compaction (skipped; "
                 "'kpbench store compact' removes them)" if leftovers else ""))
        found += len(damaged) + len(duplicates)
    if not store.tables():
        print(f"no tables (folders of part-*.parquet files) in {printable(str(root))}")
    print("store check: " + (f"{found} problem(s)" if found else "clean"))
    return 1 if found else 0


def run_compact(args) -> int:
    from kpbench.results.compact import compact
    from kpbench.results.store import printable

    store = _open_store(args)
    for table in store.tables():
        print(compact(store, table).summary())      # a sweep writing the store: StoreBusy
    if not store.tables():
        print(f"no tables (folders of part-*.parquet files) in {printable(str(store.root))}")
    return 0


VERBS = {
    "check": ("list damaged part files and keys stored twice by one run; exit 1 when any",
              CHECK_DESCRIPTION, _store_argument, run_check),
    "compact": ("merge each run's part files into one, atomically; idempotent",
                COMPACT_DESCRIPTION, _store_argument, run_compact),
}
