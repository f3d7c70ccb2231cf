"""Where things are in a results folder: the one module that spells its paths.

    <root>/.sweep.lock                                   one sweep at a time (kpbench.results.lock)
    <root>/<table>/part-<utc time>-<uuid>.parquet        a part (other tables; sweeps of old versions)
    <root>/sweeps/run-<run_id>/part-....parquet          sweeps: a folder per run
    <root>/sweeps/run-<run_id>/part-<utc time>-c<group>-<i>of<n>.parquet   a compaction output
    <root>/sweeps/run-<run_id>/.<part name>.compacting   an output being written (hidden)
    <root>/runs/...                                      the environment of each run
    <root>/figures/<name>/*.png                          reproductions' figures
    <root>/calibration/calibration.json                  the copy of ``kpbench calibrate``'s table
    <root>/report/                                       report.md, report.html, compare.html

A run's folder is ``run-`` and the run id, or ``run-h`` and a hash of it when the id is not a
plain name (the id is data: it never becomes a path as it is). Folder names carry no
``key=value``, so pandas and pyarrow read a table folder recursively without inventing a
partition column. Imports nothing of kpbench but its errors.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re

from kpbench.errors import KPBenchError

SWEEPS = "sweeps"
RUNS = "runs"
LOCK_FILE = ".sweep.lock"
FIGURES = "figures"
REPORT = "report"
CALIBRATION_COPY = pathlib.Path("calibration") / "calibration.json"
COMPARE_PAGE = "compare.html"

RUN_PREFIX = "run-"
PART_GLOB = "part-*.parquet"
COMPACTING = ".compacting"          # suffix of a compaction output being written (hidden)
_COMPACTED = re.compile(r"part-(?P<stamp>[0-9A-Za-z]+)-c(?P<group>[0-9a-f]{12})-(?P<i>[0-9]+)of(?P<n>[0-9]+)\.parquet")
_PLAIN_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


# -- the folder and its tables ----------------------------------------------------------
def store_root(path: str | os.PathLike) -> pathlib.Path:
    """The store of a results dir given as itself or as its ``sweeps`` folder."""
    path = pathlib.Path(path)
    return path.parent if path.name == SWEEPS else path


def table_dir(root: pathlib.Path, table: str) -> pathlib.Path:
    if not table or not isinstance(table, str) or "/" in table or table.startswith((".", "_")):
        raise KPBenchError(f"bad table name {table!r}: use a plain folder name like 'sweeps'")
    return pathlib.Path(root) / table


def is_table_name(name: str) -> bool:
    """Whether a folder of the store may be a table (not hidden, not private)."""
    return not name.startswith((".", "_"))


def lock_path(root: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / LOCK_FILE


def figures_dir(root: pathlib.Path, name: str | None = None) -> pathlib.Path:
    """``<root>/figures`` (all of them), or the folder of one reproduction's figures."""
    top = pathlib.Path(root) / FIGURES
    return top if name is None else table_dir(top, name)


def report_dir(root: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / REPORT


def calibration_copy(root: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(root) / CALIBRATION_COPY


def compare_page(new: str | os.PathLike) -> pathlib.Path | None:
    """Where ``kpbench compare`` writes its page by default: NEW/report/compare.html for a
    results directory (or its sweeps/ folder), else None."""
    root = store_root(new)
    return report_dir(root) / COMPARE_PAGE if (root / SWEEPS).is_dir() else None


# -- run folders ------------------------------------------------------------------------
def run_folder(run_id: str) -> str:
    """The folder of a run's sweeps parts: ``run-<run_id>``, or ``run-h<hash>`` for an id
    that is not a plain name."""
    if _PLAIN_RUN_ID.fullmatch(run_id):
        return f"{RUN_PREFIX}{run_id}"
    return f"{RUN_PREFIX}h" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def run_folders(table_folder: pathlib.Path) -> list[pathlib.Path]:
    """The run folders of a table folder (links to folders are not followed)."""
    return [sub for sub in table_folder.glob(RUN_PREFIX + "*") if sub.is_dir() and not sub.is_symlink()]


def in_run_folder(part: pathlib.Path) -> bool:
    return part.parent.name.startswith(RUN_PREFIX)


def table_folder_of(part: pathlib.Path) -> pathlib.Path:
    """The table folder of a part (in a run folder or in the table folder itself)."""
    return part.parent.parent if in_run_folder(part) else part.parent


# -- part files ---------------------------------------------------------------------------
def part_name(stamp: str, unique: str) -> str:
    return f"part-{stamp}-{unique}.parquet"


def part_stamp(name: str) -> str:
    """The time stamp of a part's name (what follows ``part-``)."""
    return name[len("part-"):].split("-")[0]


def compacted_part_name(stamp: str, group: str, i: int, n: int) -> str:
    return f"part-{stamp}-c{group}-{i}of{n}.parquet"


def compacted_name(name: str):
    """(group, i, n) of a compaction output's file name; None for any other part."""
    match = _COMPACTED.fullmatch(name)
    return None if match is None else (match["group"], int(match["i"]), int(match["n"]))


def compacting_path(final: pathlib.Path) -> pathlib.Path:
    """The hidden file a compaction output is written to before it is renamed to ``final``."""
    return final.with_name(f".{final.name}{COMPACTING}")


def compacting_groups(folders: list[pathlib.Path]) -> set[str]:
    """The compaction groups with an output still hidden (being written) in ``folders``."""
    return {parsed[0] for folder in folders for p in folder.glob(f".part-*{COMPACTING}")
            if (parsed := compacted_name(p.name[1:-len(COMPACTING)])) is not None}


def unfinished_compaction_files(table_folder: pathlib.Path) -> list[pathlib.Path]:
    """The hidden files of a compaction that did not finish (outputs and their temporaries)."""
    patterns = (f".*{COMPACTING}*", f"{RUN_PREFIX}*/.*{COMPACTING}*")
    return [p for pattern in patterns for p in table_folder.glob(pattern)
            if p.is_file() and not p.is_symlink()]


__all__ = ["CALIBRATION_COPY", "FIGURES", "LOCK_FILE", "PART_GLOB", "REPORT", "RUNS", "SWEEPS",
           "calibration_copy", "compacted_name", "compacted_part_name", "compacting_groups",
           "compacting_path", "compare_page", "figures_dir", "in_run_folder", "is_table_name",
           "lock_path", "part_name", "part_stamp", "report_dir", "run_folder", "run_folders",
           "store_root", "table_dir", "table_folder_of", "unfinished_compaction_files"]
