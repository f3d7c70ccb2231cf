"""The results store: one folder per table, one Parquet part file per append.

The layout (folders and file names) is :mod:`kpbench.results.layout`'s. A ``sweeps`` part
whose rows share one run goes into that run's folder, so reading one run opens that run's
parts alone; stores written by earlier versions (every part in the table folder) are read
as they are.

Compaction (:mod:`kpbench.results.compact`) merges parts into one per run. Its outputs
(group ``<group>``, ``n`` of them) each name, in their footer, the parts they replace; a
reader hides those parts once every output of the group is present, and hides the
outputs of an incomplete group, so a reader at any moment of a compaction (or after a kill)
sees every row exactly once (see :func:`visible_parts`).

Every ``append`` writes a new part to a hidden temporary file in the table folder and
then ``os.replace``-s it to its final name, so a reader (or a sweep killed midway) never
sees a half-written part: a part is either complete or absent. Hidden files (leading
``.``) are ignored by pyarrow/pandas, so ``pandas.read_parquet(store.table_dir("sweeps"))``
reads exactly the complete parts.

The ``sweeps`` table has the fixed schema :data:`kpbench.results.schema.SWEEP_SCHEMA`
(missing columns are written as nulls, unknown columns are refused); other tables
(reproductions) infer their schema from the rows.

A damaged part never blocks a read. Each part is read on its own, its footer (schema)
first; a part that cannot be read (random bytes, truncated, empty) or whose schema the
table's cannot take is skipped, named on stderr once per process with the reason, and
left where it is (a read deletes nothing; ``kpbench store check`` lists such parts).
What a ``sweeps`` part may hold: the columns of the schema it has must have the schema's
types, and it must have ``key`` and ``status``; columns it lacks (an older part, written
before they were added) are read as nulls, columns the schema lacks (a newer kpbench's)
are not read. A part of an inferred table must unify with the parts before it (pyarrow's
permissive promotion: int with float, null with anything; not string with a number).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import pathlib
import sys
import uuid
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kpbench.errors import KPBenchError
from kpbench.results import layout
from kpbench.results.layout import SWEEPS, compacted_name, run_folder, store_root
from kpbench.results.schema import STATUSES, SWEEP_SCHEMA

COMPACTION_KEY = b"kpbench.compaction"     # a compaction output's footer: what it replaces
_READ_ATTEMPTS = 5
_SCHEMAS = {SWEEPS: SWEEP_SCHEMA}
_REQUIRED = {SWEEPS: ("key", "status")}
# what pyarrow raises on a file that is not (or no longer) a readable Parquet file
READ_ERRORS = (pa.ArrowException, OSError, ValueError)
_warned: set[pathlib.Path] = set()     # damaged parts this process has named on stderr
_last_damaged: dict[tuple[pathlib.Path, str], list] = {}   # (root, table) -> what its latest read skipped


@dataclass(frozen=True)
class DamagedPart:
    """A part file that reads skip, and why."""
    path: pathlib.Path
    reason: str

    def __str__(self) -> str:
        return f"{printable(str(self.path))}: {self.reason}"


class _OtherSchema(Exception):
    """A readable part whose schema the table cannot take."""


class ResultStore:
    """Append-only Parquet tables under ``root`` (default ``results``)."""

    def __init__(self, root: str | os.PathLike = "results"):
        self.root = pathlib.Path(root)

    # -- paths ----------------------------------------------------------------
    def table_dir(self, table: str) -> pathlib.Path:
        return layout.table_dir(self.root, table)

    def figures_dir(self, name: str) -> pathlib.Path:
        path = layout.figures_dir(self.root, name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def tables(self) -> list[str]:
        """The tables of the store: its folders that hold part files."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir()
                      and layout.is_table_name(d.name) and self.parts(d.name))

    def parts(self, table: str, runs: set[str] | None = None) -> list[pathlib.Path]:
        """The part files of ``table`` a read takes (see :func:`visible_parts`), oldest first;
        ``runs``: leave out the folders of other runs (parts in the table folder stay)."""
        return visible_parts(*self.listing(table, runs))[0]

    def all_parts(self, table: str, runs: set[str] | None = None) -> list[pathlib.Path]:
        """Every complete part file of ``table`` (compaction's replaced parts included)."""
        return self.listing(table, runs)[0]

    def listing(self, table: str, runs: set[str] | None = None) -> tuple[list[pathlib.Path], set[str]]:
        """(every complete part file of ``table``, oldest first; the compaction groups with
        an output not yet renamed: see :func:`visible_parts`)."""
        folder = self.table_dir(table)
        if not folder.is_dir():
            return [], set()
        wanted = None if runs is None else {run_folder(r) for r in runs}
        folders = [folder] + layout.run_folders(folder)
        found = [p for sub in folders if sub == folder or wanted is None or sub.name in wanted
                 for p in sub.glob(layout.PART_GLOB) if p.is_file()]
        return sorted(found, key=lambda p: (p.name, str(p))), layout.compacting_groups(folders)

    # -- writing --------------------------------------------------------------
    def append(self, table: str, rows: list[dict]) -> pathlib.Path | None:
        """Write ``rows`` as one new part of ``table``; returns its path (None if no rows)."""
        rows = list(rows)
        if not rows:
            return None
        return self.append_arrow(table, _to_arrow(table, rows))

    def append_arrow(self, table: str, arrow_table: pa.Table) -> pathlib.Path:
        """Write an Arrow table as one new part of ``table`` (a ``sweeps`` table must have
        the sweep schema exactly: the rows' checks are the caller's)."""
        fixed = _SCHEMAS.get(table)
        if fixed is not None and not arrow_table.schema.equals(fixed):
            raise KPBenchError(f"an Arrow table for {table!r} must have the {table} schema")
        folder = self.table_dir(table) / self._run_folder_of(table, arrow_table)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        return write_part(arrow_table, folder / layout.part_name(stamp, uuid.uuid4().hex[:12]))

    @staticmethod
    def _run_folder_of(table: str, arrow_table: pa.Table) -> str:
        """The run folder of a sweeps part whose rows share one run id ("" otherwise)."""
        if table != SWEEPS or "run_id" not in arrow_table.column_names:
            return ""
        runs = arrow_table.column("run_id").unique()
        if len(runs) != 1 or runs[0].as_py() is None:
            return ""
        return run_folder(runs[0].as_py())

    # -- reading --------------------------------------------------------------
    def read(self, table: str, warn: bool = True, columns: list[str] | None = None,
             runs: set[str] | None = None, where: dict | None = None) -> pd.DataFrame:
        """The rows of ``table`` as a DataFrame (empty, with the schema's columns if known);
        damaged parts skipped (see the module doc), named on stderr with ``warn``.

        Only what is asked is read: ``columns`` (all when None; of a fixed schema, those it
        has), rows of the ``runs`` given (other runs' folders are not opened), rows whose
        columns equal ``where``'s values (``{"op": ["softmin"]}``), pushed down to Parquet."""
        return self.read_arrow(table, warn, columns, runs, where).to_pandas()

    def read_arrow(self, table: str, warn: bool = True, columns: list[str] | None = None,
                   runs: set[str] | None = None, where: dict | None = None) -> pa.Table:
        """:meth:`read` as one Arrow table."""
        schema = _SCHEMAS.get(table)
        if schema is not None and columns is not None:
            columns = [c for c in schema.names if c in set(columns)]
        where = dict(where or {})
        if runs is not None:
            where["run_id"] = sorted(runs)
        tables, _ = self._read_parts(table, warn, columns, runs, where)
        if not tables:
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select(columns) if columns is not None and schema is not None else empty
        if schema is None:
            return pa.concat_tables(tables, promote_options="permissive")
        return pa.concat_tables(tables)

    def keys(self, table: str) -> set[str]:
        """The values of the ``key`` column in the readable parts of ``table``."""
        keys: set[str] = set()
        for part in self._read_parts(table, columns=["key"])[0]:
            if "key" in part.column_names:
                keys.update(k for k in part.column("key").to_pylist() if k is not None)
        return keys

    def damaged(self, table: str, as_last_read: bool = False) -> list[DamagedPart]:
        """The parts of ``table`` that reads skip (named here, not on stderr). With
        ``as_last_read``: those the latest read of the whole table in this process skipped
        (no second read of a big store), if there was one."""
        known = _last_damaged.get((self.root.resolve(), table)) if as_last_read else None
        return known if known is not None else self._read_parts(table, warn=False)[1]

    def read_each(self, table: str, paths: list[pathlib.Path], columns: list[str] | None = None,
                  where: dict | None = None) -> tuple[list[tuple[pathlib.Path, pa.Table]], list[DamagedPart]]:
        """([(part, its rows)] of the readable ``paths``, the damaged ones), in order (see
        the module doc); ``where``: see :meth:`read`. A part that vanished raises
        FileNotFoundError."""
        schema = _SCHEMAS.get(table)
        row_filter = _filter_of(where or {})
        wanted = columns
        if columns is not None and row_filter is not None:
            wanted = list(columns) + [c for c in where if c not in columns]
            if schema is not None:
                wanted = [c for c in schema.names if c in set(wanted)]
        read, damaged = [], []
        unified = schema
        for path in paths:
            try:
                with pq.ParquetFile(path) as part:      # one open: the footer, then the columns
                    footer = part.schema_arrow
                    candidate = _fitting(table, footer, unified)
                    rows = _conformed(part, footer, schema, wanted)
                if row_filter is not None:
                    rows = rows.filter(row_filter)
                    rows = rows if wanted is columns else rows.select([c for c in wanted if c in columns])
                read.append((path, rows))
                unified = candidate
            except FileNotFoundError:
                raise
            except _OtherSchema as exc:
                damaged.append(DamagedPart(path, f"another schema: {exc}"))
            except READ_ERRORS as exc:
                damaged.append(DamagedPart(path, f"unreadable: {printable(str(exc))}"))
        return read, damaged

    def _read_parts(self, table: str, warn: bool = True, columns: list[str] | None = None,
                    runs: set[str] | None = None, where: dict | None = None
                    ) -> tuple[list[pa.Table], list[DamagedPart]]:
        """(the readable parts as Arrow tables, the damaged ones), oldest first; ``columns``:
        only those of them a part has are read (a resumed sweep reads its keys alone).
        A read during which the listing changed (a compaction ran meanwhile) or a part
        vanished starts again from a new listing."""
        for _ in range(_READ_ATTEMPTS - 1):
            before = self.listing(table, runs)
            try:
                read = self._read_listed(table, warn, columns, runs, where)
            except FileNotFoundError:
                continue
            if self.listing(table, runs) == before:
                return read
        return self._read_listed(table, warn, columns, runs, where, vanished_ok=True)

    def _read_listed(self, table, warn, columns, runs, where, vanished_ok=False):
        paths = self.parts(table, runs)
        try:
            read, damaged = self.read_each(table, paths, columns, where)
        except FileNotFoundError:
            if not vanished_ok:
                raise
            present = [p for p in paths if p.exists()]
            read, damaged = self.read_each(table, present, columns, where)
            damaged += [DamagedPart(p, "vanished while read (a compaction running?)")
                        for p in paths if p not in present]
        if warn:
            _warn_once(damaged, self.root)
        if runs is None:
            _last_damaged[(self.root.resolve(), table)] = damaged
        return [rows for _, rows in read], damaged

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"


def _conformed(part: pq.ParquetFile, footer: pa.Schema, schema: pa.Schema | None,
               columns: list[str] | None) -> pa.Table:
    """The ``columns`` of a part (all when None) as the table's schema has them: of a fixed
    schema, its columns in its order, those the part lacks as nulls, those it lacks not
    read; of an inferred one, what the part has."""
    if schema is None:
        wanted = None if columns is None else [c for c in columns if c in footer.names]
        return part.read(columns=wanted).replace_schema_metadata(None)
    fields = [f for f in schema if columns is None or f.name in columns]
    present = set(footer.names)
    rows = part.read(columns=[f.name for f in fields if f.name in present])
    return pa.table([rows.column(f.name) if f.name in present else pa.nulls(rows.num_rows, f.type)
                     for f in fields], schema=pa.schema(fields))


def write_part(arrow_table: pa.Table, path: pathlib.Path) -> pathlib.Path:
    """Write ``arrow_table`` at ``path`` atomically: a hidden temporary file beside it, then
    renamed (readers ignore hidden files, so a part is complete or absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(arrow_table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def compaction_record(path: pathlib.Path) -> dict | None:
    """What a compaction output's footer says: {"group", "outputs", "replaces"} (paths
    relative to the table folder); None when the footer is unreadable or has no record."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        record = json.loads(metadata[COMPACTION_KEY])
    except (*READ_ERRORS, KeyError, json.JSONDecodeError):
        return None
    if not (isinstance(record, dict) and all(isinstance(record.get(k), list) for k in ("outputs", "replaces"))):
        return None
    return record


def visible_parts(listed: list[pathlib.Path], pending: set[str] = frozenset()
                  ) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(the parts a read takes, the parts it hides) of a table's listing.

    A compaction group writes its outputs as hidden ``.<name>.compacting`` files, renames
    them to ``-c<group>-<i>of<n>`` part names, then removes the parts they replace. While a
    group is ``pending`` (one of its outputs is still a hidden file), its renamed outputs
    are hidden: their rows are still in the parts they replace. Once none is, the parts its
    footers name are hidden: their rows are in the outputs (a later compaction may have
    merged some outputs again: they are then replaced in turn). So every row is read once,
    at every moment of a compaction and after a kill at any of them."""
    groups: dict[str, list[pathlib.Path]] = {}
    for path in listed:
        parsed = compacted_name(path.name)
        if parsed is not None:
            groups.setdefault(parsed[0], []).append(path)
    if not groups:
        return listed, []
    table_dir = layout.table_folder_of(listed[0])
    by_relative = {_relative(p, table_dir): p for p in listed}
    hidden: set[pathlib.Path] = set()
    for group, members in groups.items():
        if group in pending:
            hidden.update(members)
            continue
        record = next(filter(None, (compaction_record(path) for path in members)), None)
        if record is None:
            continue                                            # unreadable footers: read as damaged
        own = {_relative(path, table_dir) for path in members}
        hidden.update(by_relative[r] for r in record["replaces"]
                      if isinstance(r, str) and r in by_relative and r not in own)
    return [p for p in listed if p not in hidden], [p for p in listed if p in hidden]


def _relative(path: pathlib.Path, table_dir: pathlib.Path) -> str:
    return path.relative_to(table_dir).as_posix()


def _filter_of(where: dict):
    """A pyarrow filter expression: every column in its list of values (None: no filter)."""
    expression = None
    for column, values in where.items():
        term = pc.field(column).isin(list(values))
        expression = term if expression is None else expression & term
    return expression


def latest_per_key(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ``key``: the most recently started (a ``--no-resume`` rerun wins)."""
    if frame.empty or "key" not in frame:
        return frame
    order = frame.sort_values("started_at", kind="stable") if "started_at" in frame else frame
    return order.drop_duplicates("key", keep="last").sort_index()


def duplicate_keys(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(run_id, key, count) of every key stored more than once by one run. Rows of one key
    from different runs (a resumed sweep with --retry-failed, --no-resume, a rerun into the
    same store) are the store's history, not duplicates: the latest wins."""
    if frame.empty or "key" not in frame or "run_id" not in frame:
        return []
    counts = frame.dropna(subset=["run_id", "key"]).groupby(["run_id", "key"]).size()
    return [(str(run), str(key), int(n)) for (run, key), n in counts.items() if n > 1]


def printable(text: str, limit: int = 300) -> str:
    """``text`` on one line, control characters escaped, cut at ``limit`` characters:
    file names and pyarrow's messages about a file come from the file."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _fitting(table: str, footer: pa.Schema, unified: pa.Schema | None) -> pa.Schema | None:
    """The table's schema once this part is read with it; raises _OtherSchema when the part
    does not fit (see the module doc)."""
    fixed = _SCHEMAS.get(table)
    if fixed is None:
        if unified is None:
            return footer
        try:
            return pa.unify_schemas([unified, footer], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise _OtherSchema(f"does not unify with the table's earlier parts ({printable(str(exc))})") from exc
    missing = [name for name in _REQUIRED.get(table, ()) if name not in footer.names]
    if missing:
        raise _OtherSchema(f"no {', '.join(map(repr, missing))} column")
    for field in fixed:
        found = [footer.field(i).type for i in footer.get_all_field_indices(field.name)]
        if len(found) > 1:
            raise _OtherSchema(f"column {field.name!r} appears {len(found)} times")
        if found and found[0] != field.type:
            raise _OtherSchema(f"column {field.name!r} is {printable(str(found[0]), 60)}, "
                               f"the {table} schema's is {field.type}")
    return fixed


def _warn_once(damaged: list[DamagedPart], root: pathlib.Path) -> None:
    for part in damaged:
        if part.path.resolve() in _warned:
            continue
        _warned.add(part.path.resolve())
        print(f"kpbench: warning: skipped the damaged part {part} (the file is left as it is; "
              f"'kpbench store check {printable(str(root))}' lists every one)", file=sys.stderr)


def _to_arrow(table: str, rows: list[dict]) -> pa.Table:
    schema = _SCHEMAS.get(table)
    if schema is None:
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise KPBenchError(f"rows for table {table!r} do not form one table: {exc}") from exc
    unknown = sorted({name for row in rows for name in row} - set(schema.names))
    if unknown:
        raise KPBenchError(f"unknown column(s) for table {table!r}: {', '.join(unknown)}")
    if table == SWEEPS:
        _check_sweep_rows(rows)
    columns = {}
    for field in schema:
        values = [_clean(row.get(field.name), field) for row in rows]
        try:
            columns[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise KPBenchError(f"column {field.name!r} of table {table!r}: {exc}") from exc
    return pa.table(columns, schema=schema)


def _check_sweep_rows(rows: list[dict]) -> None:
    for row in rows:
        if not row.get("key"):
            raise KPBenchError(f"a sweeps row needs a 'key': {row}")
        if row.get("status") not in STATUSES:
            raise KPBenchError(
                f"bad status {row.get('status')!r} (one of {', '.join(STATUSES)}) in row {row['key']}"
            )


def _clean(value, field: pa.Field):
    """Refuse silent truncation (pyarrow casts 1.5 to int64 as 1); NaN floats stay NaN."""
    if value is None:
        return None
    if pa.types.is_integer(field.type) and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise KPBenchError(f"column {field.name!r} needs an integer, got {value!r}")
        return int(value)
    return value


__all__ = ["COMPACTION_KEY", "DamagedPart", "READ_ERRORS", "ResultStore", "compacted_name",
           "compaction_record", "duplicate_keys", "latest_per_key", "printable", "run_folder", "store_root",
           "SWEEPS", "visible_parts", "write_part"]
