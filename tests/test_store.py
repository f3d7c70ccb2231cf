"""The Parquet results store and the run metadata."""
from __future__ import annotations

import datetime as dt
import pathlib

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kpbench.errors import KPBenchError
from kpbench.results.meta import META_COLUMNS, run_metadata
from kpbench.results.schema import COLUMNS, SWEEP_SCHEMA
from kpbench.results.store import SWEEPS, ResultStore, latest_per_key


def _row(key, status="ok", **extra):
    return {"key": key, "status": status, "op": "kernel_product", "backend": "torch", "N": 10, **extra}


def test_empty_store_reads_empty_frame_with_the_schema_columns(tmp_path):
    store = ResultStore(tmp_path)
    frame = store.read(SWEEPS)
    assert frame.empty and list(frame.columns) == COLUMNS
    assert store.keys(SWEEPS) == set()
    assert store.append(SWEEPS, []) is None


def test_append_writes_one_part_per_call_with_the_sweep_schema(tmp_path):
    store = ResultStore(tmp_path)
    first = store.append(SWEEPS, [_row("a", time_median_s=0.5), _row("b", "error", error="X: y")])
    store.append(SWEEPS, [_row("c", iterations=3.0)])
    assert len(store.parts(SWEEPS)) == 2
    assert pq.read_schema(first).remove_metadata() == SWEEP_SCHEMA
    frame = pd.read_parquet(store.table_dir(SWEEPS))   # what users do
    assert sorted(frame["key"]) == ["a", "b", "c"]
    assert list(frame.columns) == COLUMNS
    assert store.keys(SWEEPS) == {"a", "b", "c"}
    by_key = store.read(SWEEPS).set_index("key")
    assert by_key.loc["a", "time_median_s"] == 0.5 and pd.isna(by_key.loc["b", "time_median_s"])
    assert by_key.loc["c", "iterations"] == 3
    # no temporary file is left behind
    assert [p.name for p in store.table_dir(SWEEPS).iterdir() if not p.name.startswith("part-")] == []


def test_a_leftover_temporary_file_is_invisible_to_readers(tmp_path):
    store = ResultStore(tmp_path)
    store.append(SWEEPS, [_row("a")])
    (store.table_dir(SWEEPS) / ".part-crashed.parquet.tmp").write_bytes(b"half a parquet file")
    assert len(pd.read_parquet(store.table_dir(SWEEPS))) == 1
    assert store.keys(SWEEPS) == {"a"}


@pytest.mark.parametrize("row, message", [
    (_row("a", bogus=1), "unknown column"),
    (_row("a", "fine"), "bad status"),
    ({"status": "ok"}, "needs a 'key'"),
    (_row("a", iterations=2.5), "needs an integer"),
    (_row("a", N="ten"), "column 'N'"),
])
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path, row, message):
    store = ResultStore(tmp_path)
    with pytest.raises(KPBenchError, match=message):
        store.append(SWEEPS, [row])
    assert store.parts(SWEEPS) == []


def test_other_tables_infer_their_schema_and_tolerate_nulls(tmp_path):
    store = ResultStore(tmp_path)
    store.append("flow_1d", [{"step": 0, "loss": None, "backend": "torch"}])
    store.append("flow_1d", [{"step": 1, "loss": 0.5, "backend": "torch"}])
    frame = store.read("flow_1d")
    assert list(frame["step"]) == [0, 1] and frame["loss"].iloc[1] == 0.5
    assert store.keys("flow_1d") == set()


def test_table_names_cannot_escape_the_root(tmp_path):
    store = ResultStore(tmp_path)
    for bad in ("../x", ".hidden", ""):
        with pytest.raises(KPBenchError):
            store.table_dir(bad)


def test_figures_dir_is_created(tmp_path):
    path = ResultStore(tmp_path).figures_dir("flows")
    assert path.is_dir() and path == tmp_path / "figures" / "flows"


def test_latest_per_key_keeps_the_newest_run():
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    frame = pd.DataFrame({"key": ["a", "a", "b"], "run_id": ["new", "old", "old"],
                          "started_at": [t0 + dt.timedelta(hours=1), t0, t0]})
    latest = latest_per_key(frame)
    assert sorted(latest["key"]) == ["a", "b"]
    assert latest.set_index("key").loc["a", "run_id"] == "new"


def test_run_metadata_fills_every_meta_field(tmp_path):
    meta = run_metadata(sweep="speed", executor="inline")
    assert list(meta) == META_COLUMNS
    assert len(meta["run_id"]) == 32 and meta["run_id"] != run_metadata()["run_id"]
    assert meta["sweep"] == "speed" and meta["executor"] == "inline"
    assert meta["host"] and meta["cpu"] and meta["python_version"]
    assert meta["started_at"].tzinfo is not None
    assert run_metadata(run_id="abc")["run_id"] == "abc"
    # the metadata round-trips through the store
    store = ResultStore(tmp_path)
    store.append(SWEEPS, [{**meta, "key": "k", "status": "ok"}])
    stored = store.read(SWEEPS).iloc[0]
    assert stored["run_id"] == meta["run_id"] and stored["started_at"] == meta["started_at"]


def test_an_installed_kpbench_inside_another_checkout_records_no_commit(tmp_path):
    """A venv inside some git checkout: its commit is not kpbench's and must not be recorded."""
    import shutil
    import subprocess
    import sys

    from kpbench.results import meta

    assert meta.git_commit() is None or len(meta.git_commit()) == 40
    other = tmp_path / "other-project"
    site = other / "venv" / "lib" / "site-packages"
    shutil.copytree(pathlib.Path(meta.__file__).parents[1], site / "kpbench",
                    ignore=shutil.ignore_patterns("__pycache__", "images"))
    for args in (["init", "-q"], ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                                  "--allow-empty", "-m", "other"]):
        subprocess.run(["git", "-C", str(other), *args], check=True)
    out = subprocess.run([sys.executable, "-c", "from kpbench.results.meta import git_commit; "
                          "print(git_commit())"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == "None"
