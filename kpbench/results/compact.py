"""Compaction: a table's many small parts merged into one part per run.

A sweep writes a part every few points, so a long-running cluster leaves thousands of
small files, and each costs a read its open and footer. ``compact(store, table)`` rewrites
them as one part per run (in the run's folder, see :mod:`kpbench.results.store`) and
removes the parts it merged, without a moment at which a reader loses or doubles a row:

1. finish what an earlier, killed compaction left: remove the outputs of an incomplete
   group (hidden from readers) and the parts a complete group replaces (hidden too);
2. pick the parts to merge: the parts of the table folder (older versions wrote every run
   there; their rows move to their runs' folders), FLAT_PARTS_PER_GROUP at a time, then, one
   run folder at a time (the memory a compaction needs is one run's, or one such batch),
   the parts of a folder holding more than one;
3. for each such group, write each output to a hidden temporary file, each footer naming all the group's
   outputs and the parts they replace, then rename them to ``-c<group>-<i>of<n>`` names;
   a reader hides the group until its last output is renamed, then hides the replaced
   parts (:func:`kpbench.results.store.visible_parts`);
4. remove the replaced parts.

A kill between any two steps leaves a store that reads the same rows, and running the
command again finishes the work (idempotent: a store with one part per run is left as it
is). Damaged parts are never merged nor removed (``kpbench store check`` names them).
Compaction holds the store's sweep lock: a sweep writing the store meanwhile is refused
(and a compaction waits for no sweep).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import pathlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from kpbench.results import layout
from kpbench.results.layout import SWEEPS, compacted_name, run_folder
from kpbench.results.lock import store_lock
from kpbench.results.store import COMPACTION_KEY, ResultStore, visible_parts, write_part

FLAT = ""         # the table folder itself (parts of every run, as older versions wrote them)
# the table folder's parts are merged this many at a time (a group's rows are held in memory;
# a run they spread over gets one part per group, merged in its folder next)
FLAT_PARTS_PER_GROUP = 1000


@dataclass
class Compaction:
    """What a compaction did, for the report and the tests."""
    table: str
    parts_before: int = 0
    parts_after: int = 0
    rows: int = 0                   # rows written into the outputs (a run whose flat parts fell in
                                    # two batches is merged again in its folder: its rows count twice)
    merged: int = 0                 # parts merged and removed
    outputs: list[pathlib.Path] = field(default_factory=list)
    cleaned: int = 0                # leftovers of a killed compaction removed
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.merged and not self.cleaned:
            return f"{self.table}: {self.parts_before} parts, nothing to compact"
        done = (f"{self.table}: {self.parts_before} parts -> {self.parts_after} "
                f"({self.merged} merged into {len(self.outputs)}, {self.rows} rows written)")
        if self.cleaned:
            done += f"; removed {self.cleaned} leftover file(s) of an interrupted compaction"
        return done + f" in {self.seconds:.1f} s"


def compact(store: ResultStore, table: str = SWEEPS, pause=None) -> Compaction:
    """Merge the parts of ``table`` into one per run (see the module doc). ``pause(step)``,
    when given, is called between the steps (the kill tests stop there)."""
    pause = pause or (lambda step: None)
    start = time.perf_counter()
    with store_lock(store.root):
        result = Compaction(table)
        result.cleaned = _finish_earlier(store, table)
        result.parts_before = len(store.parts(table))
        flat = _sources(store, table).get(FLAT) or []
        for first in range(0, len(flat), FLAT_PARTS_PER_GROUP):   # first the table folder's
            _merge(store, table, {FLAT: flat[first:first + FLAT_PARTS_PER_GROUP]}, result, pause)
        for folder, paths in _sources(store, table).items():
            if folder != FLAT:                  # then each run folder, one at a time
                _merge(store, table, {folder: paths}, result, pause)
        result.parts_after = len(store.parts(table))
    result.seconds = time.perf_counter() - start
    return result


def _finish_earlier(store: ResultStore, table: str) -> int:
    """Remove the files an interrupted compaction left: both kinds are hidden from readers."""
    _, hidden = visible_parts(*store.listing(table))
    unfinished = layout.unfinished_compaction_files(store.table_dir(table))
    for path in hidden + unfinished:      # an incomplete group's outputs before its hidden files
        _remove(path)
    return len(hidden) + len(unfinished)


def _sources(store: ResultStore, table: str) -> dict[str, list[pathlib.Path]]:
    """folder (FLAT for the table folder, else a run folder) -> its parts to merge: those
    of a folder with two parts or more, and a sweeps part of the table folder that is no
    compaction's output (older versions wrote every run there: it moves to its run's)."""
    by_folder: dict[str, list[pathlib.Path]] = defaultdict(list)
    table_dir = store.table_dir(table)
    for path in store.parts(table):
        by_folder[FLAT if path.parent == table_dir else path.parent.name].append(path)
    return {f: paths for f, paths in by_folder.items() if len(paths) > 1
            or (f == FLAT and table == SWEEPS and compacted_name(paths[0].name) is None)}


def _merge(store: ResultStore, table: str, sources: dict[str, list[pathlib.Path]],
           result: Compaction, pause) -> None:
    group = uuid.uuid4().hex[:12]
    table_dir = store.table_dir(table)
    readable = {folder: dict(store.read_each(table, paths)[0]) for folder, paths in sources.items()}
    sources = {folder: list(rows) for folder, rows in readable.items() if len(rows) > 0}
    if not sources:
        return                                                  # damaged parts stay as they are
    outputs = _plan(table, {folder: list(rows.values()) for folder, rows in readable.items() if rows})
    replaced = [p for paths in sources.values() for p in paths]
    names = [_output_path(table_dir, folder, group, i, len(outputs), sources.get(folder) or sources[FLAT])
             for i, folder in enumerate(outputs)]
    record = json.dumps({"group": group, "outputs": [_rel(p, table_dir) for p in names],
                         "replaces": [_rel(p, table_dir) for p in replaced]}).encode()
    temporaries = []
    for rows, final in zip(outputs.values(), names):
        result.rows += rows.num_rows
        metadata = {**(rows.schema.metadata or {}), COMPACTION_KEY: record}
        tmp = layout.compacting_path(final)
        write_part(rows.replace_schema_metadata(metadata), tmp)   # hidden: readers skip it
        temporaries.append((tmp, final))
    pause("written")
    for k, (tmp, final) in enumerate(temporaries):
        os.replace(tmp, final)
        pause(f"renamed {k + 1}")
    for path in replaced:
        _remove(path)
        pause("removing")
    result.merged += len(replaced)
    result.outputs += names


def _plan(table: str, sources: dict[str, list[pa.Table]]) -> dict[str, pa.Table]:
    """folder -> the rows of its output: a run folder's parts, with the rows of that run
    found in the table folder's parts (older versions wrote there); rows of the table
    folder without a run (or of a table other than sweeps) stay in the table folder."""
    outputs = {folder: _concat(table, parts) for folder, parts in sources.items() if folder != FLAT}
    if FLAT not in sources:
        return outputs
    flat = _concat(table, sources[FLAT])
    if table != SWEEPS:
        return {**outputs, FLAT: flat}
    column = flat.column("run_id")
    for run in column.unique().to_pylist():
        rows = flat.filter(pc.is_null(column) if run is None else pc.equal(column, run))
        folder = FLAT if run is None else run_folder(run)
        outputs[folder] = pa.concat_tables([rows, outputs[folder]]) if folder in outputs else rows
    return outputs


def _concat(table: str, parts: list[pa.Table]) -> pa.Table:
    parts = [t.replace_schema_metadata(None) for t in parts]
    return pa.concat_tables(parts) if table == SWEEPS else pa.concat_tables(parts, promote_options="permissive")


def _output_path(table_dir: pathlib.Path, folder: str, group: str, i: int, n: int,
                 paths: list[pathlib.Path]) -> pathlib.Path:
    oldest = layout.part_stamp(min(p.name for p in paths))
    stamp = oldest if oldest.isalnum() else _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return table_dir / folder / layout.compacted_part_name(stamp, group, i, n)


def _rel(path: pathlib.Path, table_dir: pathlib.Path) -> str:
    return path.relative_to(table_dir).as_posix()


def _remove(path: pathlib.Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    if layout.in_run_folder(path):
        try:
            path.parent.rmdir()           # an emptied run folder (fails, harmlessly, if not empty)
        except OSError:
            pass


__all__ = ["Compaction", "compact"]
