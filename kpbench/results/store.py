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
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import pathlib
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kpbench.errors import KPBenchError
from kpbench.results.schema import STATUSES, SWEEP_SCHEMA

SWEEPS = "sweeps"
_SCHEMAS = {SWEEPS: SWEEP_SCHEMA}


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
        arrow_table = _to_arrow(table, rows)
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
    def read(self, table: str) -> pd.DataFrame:
        """All rows of ``table`` as a DataFrame (empty, with the schema's columns if known)."""
        parts = self.parts(table)
        schema = _SCHEMAS.get(table)
        if not parts:
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.to_pandas()
        tables = [pq.read_table(p, schema=schema) for p in parts]
        if schema is None:
            combined = pa.concat_tables(tables, promote_options="permissive")
        else:
            combined = pa.concat_tables(tables)
        return combined.to_pandas()

    def keys(self, table: str) -> set[str]:
        """The values of the ``key`` column already stored in ``table``."""
        keys: set[str] = set()
        for part in self.parts(table):
            if "key" not in pq.read_schema(part).names:
                continue
            column = pq.read_table(part, columns=["key"]).column("key")
            keys.update(k for k in column.to_pylist() if k is not None)
        return keys

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"


def latest_per_key(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ``key``: the most recently started (a ``--no-resume`` rerun wins)."""
    if frame.empty or "key" not in frame:
        return frame
    order = frame.sort_values("started_at", kind="stable") if "started_at" in frame else frame
    return order.drop_duplicates("key", keep="last").sort_index()


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


__all__ = ["ResultStore", "latest_per_key", "SWEEPS"]
