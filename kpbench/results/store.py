"""The results store: one folder per table, one Parquet part file per append.

Layout::

    <root>/<table>/part-<utc time>-<uuid>.parquet

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
import math
import os
import pathlib
import sys
import uuid
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kpbench.errors import KPBenchError
from kpbench.results.schema import STATUSES, SWEEP_SCHEMA

SWEEPS = "sweeps"
_SCHEMAS = {SWEEPS: SWEEP_SCHEMA}
_REQUIRED = {SWEEPS: ("key", "status")}
# what pyarrow raises on a file that is not (or no longer) a readable Parquet file
READ_ERRORS = (pa.ArrowException, OSError, ValueError)
_warned: set[pathlib.Path] = set()     # damaged parts this process has named on stderr


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
        _check_table_name(table)
        return self.root / table

    def figures_dir(self, name: str) -> pathlib.Path:
        _check_table_name(name)
        path = self.root / "figures" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def tables(self) -> list[str]:
        """The tables of the store: its folders that hold part files."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir()
                      and not d.name.startswith((".", "_")) and self.parts(d.name))

    def parts(self, table: str) -> list[pathlib.Path]:
        """The complete part files of ``table``, oldest first."""
        folder = self.table_dir(table)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())

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
        folder = self.table_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            pq.write_table(arrow_table, tmp)
            os.replace(tmp, folder / name)
        finally:
            if tmp.exists():
                tmp.unlink()
        return folder / name

    # -- reading --------------------------------------------------------------
    def read(self, table: str, warn: bool = True) -> pd.DataFrame:
        """All rows of ``table`` as a DataFrame (empty, with the schema's columns if known);
        damaged parts skipped (see the module doc), named on stderr with ``warn``."""
        tables, _ = self._read_parts(table, warn)
        schema = _SCHEMAS.get(table)
        if not tables:
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.to_pandas()
        if schema is None:
            combined = pa.concat_tables(tables, promote_options="permissive")
        else:
            combined = pa.concat_tables(tables)
        return combined.to_pandas()

    def keys(self, table: str) -> set[str]:
        """The values of the ``key`` column in the readable parts of ``table``."""
        keys: set[str] = set()
        for part in self._read_parts(table, columns=["key"])[0]:
            if "key" in part.column_names:
                keys.update(k for k in part.column("key").to_pylist() if k is not None)
        return keys

    def damaged(self, table: str) -> list[DamagedPart]:
        """The parts of ``table`` that reads skip (named here, not on stderr)."""
        return self._read_parts(table, warn=False)[1]

    def _read_parts(self, table: str, warn: bool = True, columns: list[str] | None = None
                    ) -> tuple[list[pa.Table], list[DamagedPart]]:
        """(the readable parts as Arrow tables, the damaged ones), oldest first; ``columns``:
        only those of them a part has are read (a resumed sweep reads its keys alone)."""
        schema = _SCHEMAS.get(table)
        tables, damaged = [], []
        unified = schema
        for path in self.parts(table):
            try:
                footer = pq.read_schema(path)      # the footer alone: cheap, first
                candidate = _fitting(table, footer, unified)
                wanted = None if columns is None else [c for c in columns if c in footer.names]
                tables.append(pq.read_table(path, schema=schema, columns=wanted))
                unified = candidate
            except _OtherSchema as exc:
                damaged.append(DamagedPart(path, f"another schema: {exc}"))
            except READ_ERRORS as exc:
                damaged.append(DamagedPart(path, f"unreadable: {printable(str(exc))}"))
        if warn:
            _warn_once(damaged, self.root)
        return tables, damaged

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"


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


def store_root(path: str | os.PathLike) -> pathlib.Path:
    """The store of a results dir given as itself or as its ``sweeps`` folder."""
    path = pathlib.Path(path)
    return path.parent if path.name == SWEEPS else path


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


def _check_table_name(name: str) -> None:
    if not name or not isinstance(name, str) or "/" in name or name.startswith((".", "_")):
        raise KPBenchError(f"bad table name {name!r}: use a plain folder name like 'sweeps'")


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


__all__ = ["DamagedPart", "READ_ERRORS", "ResultStore", "duplicate_keys", "latest_per_key", "printable",
           "store_root", "SWEEPS"]
