"""The store at scale: a folder per run, reads of what is asked, compaction (killed too)."""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from kpbench.results.compact import compact
from kpbench.results.store import SWEEPS, ResultStore, run_folder, write_part
from kpbench.cli.store import run_check
from kpbench.cli.main import main

RUNS = ("run-a", "run-b", "c/../weird run")      # the last is no plain name: a hashed folder


def _row(key, run, **extra):
    return {"key": key, "status": "ok", "op": "kernel_product", "backend": "torch", "N": 10,
            "run_id": run, **extra}


def _legacy_part(store, name, rows):
    """A part where kpbench before run folders wrote it: the sweeps folder itself."""
    from kpbench.results.store import _to_arrow
    write_part(_to_arrow(SWEEPS, rows), store.table_dir(SWEEPS) / f"part-{name}-legacy.parquet")


def _store(root):
    """Runs a and b appended (3 parts each, run folders), run c and a mixed part in the
    sweeps folder as older versions wrote them."""
    store = ResultStore(root)
    _legacy_part(store, "20250101T000000000000", [_row(f"c{i}", RUNS[2]) for i in range(3)])
    _legacy_part(store, "20250101T000000000001", [_row("a-old", RUNS[0]), _row("c9", RUNS[2])])
    for run in RUNS[:2]:
        for part in range(3):
            store.append(SWEEPS, [_row(f"{run}-{part}-{i}", run, op="softmin" if i else "sinkhorn")
                                  for i in range(2)])
    return store


def _rows(store):
    frame = store.read(SWEEPS, columns=["key", "run_id"])
    return collections.Counter(zip(frame["key"], frame["run_id"]))


def test_appends_go_to_a_folder_per_run_and_old_flat_parts_still_read(tmp_path):
    store = _store(tmp_path)
    folders = sorted(p.parent.name for p in store.parts(SWEEPS))
    assert folders.count(run_folder(RUNS[0])) == 3 and folders.count(SWEEPS) == 2
    assert run_folder(RUNS[2]).startswith("run-h") and ".." not in run_folder(RUNS[2])
    assert sum(_rows(store).values()) == 17 and len(store.keys(SWEEPS)) == 17


def test_a_read_opens_only_the_runs_asked_and_reads_only_the_columns_asked(tmp_path):
    store = _store(tmp_path)
    assert len(store.parts(SWEEPS, runs={RUNS[1]})) == 2 + 3       # the sweeps folder's + its own
    frame = store.read(SWEEPS, columns=["key", "op"], runs={RUNS[1]}, where={"op": ["softmin"]})
    assert list(frame.columns) == ["op", "key"]                   # in the schema's order
    assert sorted(frame["key"]) == [f"run-b-{p}-1" for p in range(3)]
    frame = store.read(SWEEPS, columns=["key"], runs={RUNS[2]})
    assert sorted(frame["key"]) == ["c0", "c1", "c2", "c9"]


def test_compaction_merges_one_part_per_run_keeps_every_row_and_is_idempotent(tmp_path, capsys):
    store = _store(tmp_path)
    before = _rows(store)
    result = compact(store)
    # the table folder's 2 parts into runs a and c, then a's 4 parts and b's 3: 9 merged, 3 written
    # for a and c, then a's 4 and b's 3 rows again (a row is rewritten once per group it is in)
    assert (result.parts_before, result.parts_after, result.merged) == (8, 3, 9)
    assert _rows(store) == before
    assert sorted(p.parent.name for p in store.all_parts(SWEEPS)) == sorted(map(run_folder, RUNS))
    again = compact(store)
    assert (again.merged, again.cleaned, again.parts_after) == (0, 0, 3)
    assert again.summary() == "sweeps: 3 parts, nothing to compact"
    assert main(["store", "check", str(tmp_path)]) == 0
    assert "table sweeps: 3 parts, 17 rows" in capsys.readouterr().out


def test_the_table_folder_is_compacted_in_batches_that_end_one_part_per_run(tmp_path, monkeypatch):
    from kpbench.results import compact as compaction

    store = _store(tmp_path)
    before = _rows(store)
    monkeypatch.setattr(compaction, "FLAT_PARTS_PER_GROUP", 1)   # the 2 legacy parts: 2 batches
    result = compact(store)
    assert _rows(store) == before and result.parts_after == 3
    assert len(result.outputs) == 1 + 2 + 3        # batch 1: c; batch 2: a, c; then the folders of a, b, c
    assert 0 < result.seconds < 60                 # the compaction's own time (a loop once shadowed its clock)


_KILLED = textwrap.dedent("""
    import sys, time
    from kpbench.results.compact import compact
    from kpbench.results.store import ResultStore
    target, seen = sys.argv[2], []
    def pause(step):
        seen.append(step)
        print(f"{step}#{seen.count(step)}", flush=True)
        if f"{step}#{seen.count(step)}" == target:
            time.sleep(120)
    compact(ResultStore(sys.argv[1]), pause=pause)
    print("done", flush=True)
""")


# the table folder's 2 parts into runs a and c (2 outputs, removing #1-2), then run a's folder
# (3 parts + the new one -> 1 output: written#2, renamed 1#2, removing #3-6), then run b's (#7-9)
@pytest.mark.parametrize("moment", ["written#1", "renamed 1#1", "renamed 2#1", "removing#1",
                                    "written#2", "renamed 1#2", "removing#5", "removing#8"])
def test_a_compaction_killed_at_any_moment_loses_and_doubles_no_row(tmp_path, moment):
    store = _store(tmp_path / "store")
    before = _rows(store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED, str(store.root), moment],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.strip() in (moment, "done"):
                break
        assert line.strip() == moment, "the compaction ended before the moment to kill it"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert _rows(store) == before                     # a reader after the kill
    result = compact(store)                           # finishes what the kill left
    assert _rows(store) == before and result.parts_after == 3
    assert result.cleaned > 0                         # its leftovers, hidden from readers, removed
    assert not [p for p in store.table_dir(SWEEPS).rglob(".*")]   # no temporary file left


def test_a_vanished_part_restarts_the_read(tmp_path, monkeypatch):
    store = _store(tmp_path)
    before = _rows(store)
    real_open, calls = pq.ParquetFile, []

    def compact_meanwhile(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            compact(store)            # the parts listed before are gone now
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", compact_meanwhile)
    assert _rows(store) == before


# -- a synthetic store of many rows (scripts/make_store.py) -----------------------------------
def _make_store(out, rows):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "make_store.py"
    spec = importlib.util.spec_from_file_location("make_store", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_store(out, rows, rows_per_run=600, rows_per_part=100)


def test_the_charts_embed_one_row_per_point_and_status_past_the_limit(tmp_path):
    from kpbench.results import interactive
    from kpbench.results.selection import cells, sweep_frame

    _make_store(tmp_path, 6000)
    frame = sweep_frame(tmp_path)
    shown = interactive.shown_rows(frame, limit=1000)
    groups = frame.groupby(["op", "config", "backend", "N", "status"], sort=False, dropna=False)
    assert len(frame) > 1000 and len(shown) == groups.ngroups <= 6 * len(cells(frame))
    assert shown["_represents"].sum() == len(frame)                 # every row stands somewhere
    ok = shown[(shown["status"] == "ok") & (shown["_represents"] > 2)].iloc[0]
    same = frame[(frame["config"] == ok["config"]) & (frame["backend"] == ok["backend"])
                 & (frame["N"] == ok["N"]) & (frame["op"] == ok["op"]) & (frame["status"] == "ok")]
    times = sorted(same["time_median_s"])
    assert ok["time_median_s"] == times[(len(times) - 1) // 2]        # the median row, not a mean
    records = interactive.row_records(shown)
    stand_for_more = ["the median-time row of" in r["hover"] for r in records]
    assert len(records) == len(shown) and sum(stand_for_more) == (shown["_represents"] > 1).sum() > 0
    assert interactive.shown_rows(frame, limit=len(frame)) is frame  # under the limit: every row


def test_synthetic_rows_are_said_to_be_synthetic_by_report_and_compare(tmp_path, capsys):
    from kpbench.results.report import _synthetic_warning
    from kpbench.results.selection import sweep_frame

    _make_store(tmp_path, 1200)
    frame = sweep_frame(tmp_path)
    assert frame["synthetic"].eq(True).all() and frame["host"].str.startswith("synthetic").all()
    assert "rows are synthetic" in str(_synthetic_warning(frame)[0].text)
    assert _synthetic_warning(frame.assign(synthetic=None)) == []
    main(["compare", str(tmp_path), str(tmp_path), "--allow-env-mismatch", "--no-page"])
    assert "rows are synthetic (made by scripts/make_store.py)" in capsys.readouterr().out


def test_compact_refuses_a_store_a_sweep_is_writing_and_a_missing_folder(tmp_path, capsys):
    from kpbench.results.lock import store_lock

    store = _store(tmp_path / "store")
    with store_lock(store.root):
        assert main(["store", "compact", str(store.root)]) == 2
    assert "being written by another sweep" in capsys.readouterr().err
    assert len(store.parts(SWEEPS)) == 8                              # nothing was touched
    assert main(["store", "compact", str(tmp_path / "nowhere")]) == 2
    assert "no results directory" in capsys.readouterr().err
