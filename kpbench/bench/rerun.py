"""``kpbench rerun STORE``: measure the points of a stored run again, from its rows alone.

    kpbench rerun results                       # the latest run of results/, into results/
    kpbench rerun results --run-id 3fa2 --out elsewhere --executor inline

Everything a point needs is read from its row: the point columns (op, backend, kernel,
N, M, D, blur, p, reach, dtype, device, seed, iters, scaling, tol, offset, scale, data; the data
source is seeded, see kpbench.datasets.sources), the kind of measure (the
``sweep`` column) and the settings of the run (repeats for speed, warmup, threads,
timeout_s, memory_budget, and the KeOps/CUDA build flags ``cxxflags``, set as
``CXXFLAGS`` while the rerun runs). A row whose point columns no longer give its key, or
a setting that no row of its kind recorded, is an error naming the column.

A store is data, never code: KeOps hands CXXFLAGS to a shell, so stored build flags are
used only when every token is a plain compiler flag (kpbench.backends.cxxflags); any
other (``$(...)``, ``;``, ``-fplugin=``, ``-B``, ``@file``, ...) is an error naming the row,
the column and the token, before anything runs. A point measured on a file (``data`` =
``file:PATH``) is rerun only on the same bytes: a file now missing, or whose hash is not the
stored ``data_hash``, is an error naming the file and both hashes, before anything runs.

The rerun is a new run (new run_id) in ``--out`` (default: the same store; there the
stored keys are not skipped, elsewhere an interrupted rerun resumes). Afterwards the
input hashes of both runs are compared (exit 1 when a point's generated inputs differ:
not the same problem), the build flags too, and the ``kpbench compare`` command that
compares the two runs is printed.
"""
from __future__ import annotations

import contextlib
import math
import os
import pathlib
import uuid
from dataclasses import dataclass

import pandas as pd

from kpbench.backends.cxxflags import check_cxxflags
from kpbench.errors import KPBenchError
from kpbench.results.schema import POINT_COLUMNS
from kpbench.results.store import store_root

INT_POINT_COLUMNS = ("N", "M", "D", "seed", "p", "iters")
FLOAT_POINT_COLUMNS = ("blur", "reach", "scaling", "tol", "offset", "scale")
# null: the op does not use it (offset, scale: the point is not moved; data: the default pair)
NULLABLE_POINT_COLUMNS = ("p", "reach", "iters", "scaling", "tol", "offset", "scale", "data", "kernel", "loss")
# columns a row may lack (stored before them): loss (a loss op's loss was in kernel, see split_loss)
LATER_POINT_COLUMNS = ("loss",)
# settings of the run: (column, needed for these kinds; None = every kind)
SETTINGS = (("repeats", ("speed",)), ("warmup", None), ("threads", None), ("timeout_s", None),
            ("memory_budget", None), ("cxxflags", None))
NULLABLE_SETTINGS = ("memory_budget",)                        # null: the backend's own budget


@dataclass
class RerunGroup:
    """Points of one kind measured with one set of settings."""

    kind: str
    settings: dict
    points: list

    def spec(self):
        from kpbench.bench.plan import SweepSpec

        return SweepSpec(
            kind=self.kind, ops=_unique(p.op for p in self.points),
            backends=_unique(p.backend for p in self.points),
            dtype=_unique(p.dtype for p in self.points),
            device=_unique(p.device for p in self.points),
        )

    def run_settings(self, **execution):
        """The Settings the points were measured with (read back from their rows), run with
        ``execution`` (executor, out, ...)."""
        from kpbench.bench.settings import Settings

        return Settings.from_row_meta(self.settings, **execution)


# -- reading a stored run ------------------------------------------------------------
def load_run(store: str | os.PathLike, run_id: str | None = None) -> tuple[str, pd.DataFrame]:
    """(run_id, its rows: one per point key) of ``run_id`` (prefix; None: the latest run)."""
    from kpbench.results.selection import load_run as load_stored_run

    rows = load_stored_run(store, run_id or "latest")
    if rows.empty:
        raise KPBenchError(f"no sweep rows in {store}: nothing to rerun")
    return str(rows["run_id"].iloc[0]), rows


def plan(rows: pd.DataFrame, run_id: str = "?") -> list[RerunGroup]:
    """The groups (kind, settings, points) that measure ``rows`` again."""
    _check_columns(rows, ["key", "sweep"] + [c for c in POINT_COLUMNS if c not in LATER_POINT_COLUMNS]
                   + [c for c, _ in SETTINGS])
    _check_stored_settings(rows)
    check_data_files(rows)
    groups = []
    for kind, of_kind in rows.groupby("sweep", dropna=False):
        if not isinstance(kind, str) or not kind:
            raise KPBenchError(f"run {run_id}: {len(of_kind)} rows have no 'sweep' column "
                               "(the kind of measure: speed | memory | accuracy)")
        filled = _fill_settings(of_kind, kind, run_id)
        names = [c for c, kinds in SETTINGS if kinds is None or kind in kinds]
        for values, group in filled.groupby(names, dropna=False, sort=True):
            settings = {n: _none(v) for n, v in zip(names, values)}
            groups.append(RerunGroup(kind, settings, [point_from_row(r, kind)
                                                      for r in group.to_dict("records")]))
    return groups


def point_from_row(row: dict, kind: str):
    """The Point of a stored row; its key must be the row's (else the row is not rerunnable)."""
    from kpbench.bench.plan import point_from_fields

    values = {}
    for name in POINT_COLUMNS:
        value = _none(row.get(name))
        if value is None and name not in NULLABLE_POINT_COLUMNS:
            raise KPBenchError(f"row {row.get('key')}: column {name!r} is empty: cannot rerun it")
        if value is not None and name in INT_POINT_COLUMNS:
            value = int(value)
        elif value is not None and name in FLOAT_POINT_COLUMNS:
            value = float(value)
        values[name] = value
    point = point_from_fields(values)
    if point.key(kind) != row.get("key"):
        raise KPBenchError(
            f"row {row.get('key')}: its point columns give the key {point.key(kind)} "
            f"({kind}): stored by a kpbench with other point keys, cannot rerun it exactly")
    return point


def _check_columns(rows: pd.DataFrame, names: list[str]) -> None:
    missing = [n for n in names if n not in rows]
    if missing:
        raise KPBenchError(f"cannot rerun: the rows lack the column(s) {', '.join(missing)}")


def _check_stored_settings(rows: pd.DataFrame) -> None:
    """The stored values that reach the environment: build flags (a shell reads them) and
    thread counts (OMP_NUM_THREADS, ...), each checked in every row."""
    for row in rows[["key", "cxxflags", "threads"]].to_dict("records"):
        where = f"row {row['key']}, column"
        if _none(row["cxxflags"]) is not None:
            check_cxxflags(row["cxxflags"], f"{where} 'cxxflags'")
        threads = _none(row["threads"])
        if threads is not None and not _positive_whole(threads):
            raise KPBenchError(f"{where} 'threads': {threads!r} is not a positive whole number")


def check_data_files(rows: pd.DataFrame) -> None:
    """Every ``file:`` source of ``rows`` still holds the bytes its rows were measured on."""
    from kpbench.datasets.sources import FILE_PREFIX, checked_stat, file_hash

    if "data" not in rows or "data_hash" not in rows:
        return
    for data, group in rows.groupby("data", dropna=True):
        if not (isinstance(data, str) and data.startswith(FILE_PREFIX)):
            continue
        stored = sorted(set(group["data_hash"].dropna()))
        if not stored:   # its points failed before reading it: nothing to hold it to
            continue
        path = data[len(FILE_PREFIX):]
        try:
            checked_stat(path)
            now, _size = file_hash(path)
        except (KPBenchError, OSError) as exc:
            raise KPBenchError(f"cannot rerun: {exc} (stored hash {', '.join(stored)})") from None
        if stored != [now]:
            raise KPBenchError(f"cannot rerun: data file {path!r} changed: stored hash "
                               f"{', '.join(stored)}, now {now}")


def _positive_whole(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 1 and float(value).is_integer())


def _fill_settings(rows: pd.DataFrame, kind: str, run_id: str) -> pd.DataFrame:
    """Rows that did not record a setting (failed points) take the one value of their kind."""
    rows = rows.copy()
    for name, kinds in SETTINGS:
        if kinds is not None and kind not in kinds:
            continue
        column = rows[name].astype(object).where(rows[name].notna(), None)
        values = column.dropna().unique()
        if len(values) == 0 and name not in NULLABLE_SETTINGS:
            raise KPBenchError(
                f"cannot rerun run {run_id}: column {name!r} is empty in all {len(rows)} {kind} "
                "rows (stored before kpbench recorded it); a rerun needs "
                + ", ".join(c for c, k in SETTINGS if k is None or kind in k))
        if len(values) > 1 and column.isna().any():
            raise KPBenchError(
                f"cannot rerun run {run_id}: {int(column.isna().sum())} {kind} rows have no "
                f"{name!r} and the others several ({', '.join(map(str, values))}): ambiguous")
        rows[name] = column.fillna(values[0]) if len(values) == 1 else column
    return rows


def _none(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _unique(values) -> list:
    return list(dict.fromkeys(values))


# -- running it ----------------------------------------------------------------------
def rerun(store, run_id: str | None = None, out=None, executor: str | None = None,
          address: str | None = None, num_cpus: int | None = None,
          progress: bool = True, wait: bool = False) -> tuple[str, str, list[RerunGroup]]:
    """Measure the points of the stored run again as a new run; returns
    (old run_id, new run_id, the groups run)."""
    from kpbench.bench.sweep import run_sweep

    old_id, rows = load_run(store, run_id)
    groups = plan(rows, old_id)
    out = pathlib.Path(out) if out is not None else store_root(store)
    execution = dict(executor=executor or _stored_executor(rows), out=str(out),
                     resume=out.resolve() != store_root(store).resolve(),
                     address=address, num_cpus=num_cpus, progress=progress, wait=wait)
    new_id = uuid.uuid4().hex
    with build_flags(_one_cxxflags(groups, old_id)):
        for group in groups:
            result = run_sweep(group.spec(), group.run_settings(**execution), run_id=new_id,
                               points=group.points)
            print(result.summary(), flush=True)
    return old_id, new_id, groups


def _stored_executor(rows: pd.DataFrame) -> str:
    values = rows["executor"].dropna().unique() if "executor" in rows else []
    return str(values[0]) if len(values) == 1 else "ray"


def _one_cxxflags(groups: list[RerunGroup], run_id: str) -> str:
    flags = _unique(g.settings["cxxflags"] for g in groups)
    if len(flags) > 1:
        raise KPBenchError(f"run {run_id} was built with several CXXFLAGS ({flags}): "
                           "rerun needs one set of build flags per run")
    return flags[0]


@contextlib.contextmanager
def build_flags(cxxflags: str):
    """CXXFLAGS set to the stored flags (KeOps compiles with them; "" = unset), restored
    afterwards; flags outside the allow-list are refused."""
    check_cxxflags(cxxflags, "stored build flags")
    before = os.environ.get("CXXFLAGS")
    if cxxflags:
        os.environ["CXXFLAGS"] = cxxflags
    else:
        os.environ.pop("CXXFLAGS", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CXXFLAGS", None)
        else:
            os.environ["CXXFLAGS"] = before


def check_rerun(store, old_id: str, out, new_id: str) -> tuple[list[str], bool]:
    """Lines comparing the two runs (inputs, values, environments, build flags);
    True when the inputs differ."""
    from kpbench.results.fingerprint import reproducibility_notes
    from kpbench.results.selection import load_run as load_stored_run

    old = load_stored_run(store, old_id)
    new = load_stored_run(out, new_id)
    lines = reproducibility_notes(store, old, out, new)
    differ = any(line.startswith("inputs DIFFER") for line in lines)
    flags = {side: sorted(set(rows["cxxflags"].dropna())) for side, rows in (("old", old), ("new", new))}
    if flags["old"] != flags["new"]:
        lines.append(f"build flags differ: CXXFLAGS {flags['old']} -> {flags['new']} "
                     "(workers of an already running Ray cluster keep their own environment)")
    return lines, differ
