"""A damaged store still opens: a part that is unreadable or of another schema is skipped,
named once on stderr (and in the report), and left byte for byte; ``kpbench store check``
lists such parts and the keys one run stored twice."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpbench.results.meta import RUNS, record_environment
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.main import main

SWEEP = ["sweep", "speed", "--ops", "kernel_product", "--backends", "numpy", "--dtype", "float64",
         "--repeats", "3", "--warmup", "0", "--executor", "inline", "--no-progress"]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def foreign_part(good: bytes) -> bytes:
    """A valid Parquet file whose N column is text: a stored key, and "20" would cast."""
    row = pq.read_table(io.BytesIO(good)).slice(0, 1)
    return parquet_bytes(row.set_column(row.schema.get_field_index("N"), "N", pa.array(["20"])))


# damage -> (the damaged part's bytes from a good part's, what the warning says)
DAMAGES = {
    "random_bytes": (lambda good: np.random.default_rng(0).bytes(4096), "unreadable: Parquet magic bytes"),
    "truncated": (lambda good: good[: len(good) // 2], "unreadable: Parquet magic bytes"),
    "foreign_schema": (foreign_part, "another schema: column 'N' is string, the sweeps schema's is int64"),
    "zero_bytes": (lambda good: b"", "unreadable: Parquet file size is 0 bytes"),
}


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    """Two numpy points (N=20, 40) measured by one sweep."""
    out = tmp_path_factory.mktemp("clean") / "results"
    assert main([*SWEEP, "--N", "20,40", "--out", str(out)]) == 0
    return out


def damaged_copy(clean_store, tmp_path, damage):
    """A copy of the clean store with one damaged part beside its good ones:
    (root, the damaged part, its bytes)."""
    root = tmp_path / "results"
    shutil.copytree(clean_store, root)
    make, _ = DAMAGES[damage]
    data = make(ResultStore(root).parts(SWEEPS)[0].read_bytes())
    bad = root / SWEEPS / "part-x.parquet"
    bad.write_bytes(data)
    return root, bad, data


def warnings_about(err: str, part) -> list[str]:
    return [line for line in err.splitlines() if "warning: skipped the damaged part" in line
            and str(part) in line]


def report_status(root, out) -> str:
    """The status section of the report (the good rows: 2 ok points)."""
    markdown = (root / "report" / "report.md").read_text()
    status = markdown.split("## Status counts")[1].split("## Crossover map")[0]
    assert "| kernel_product | numpy | 2 |" in status
    return status


def compared_both_points(root, out) -> None:
    assert "2 points compared" in out and "no regression" in out


def reran_both_points(root, out) -> None:
    rows = ResultStore(root).read(SWEEPS, warn=False)
    assert len(rows) == 4 and rows["run_id"].nunique() == 2 and set(rows["status"]) == {"ok"}


def resumed_with_one_point(root, out) -> None:
    assert "3 points, 1 run (1 ok), 2 already stored" in out
    assert len(ResultStore(root).read(SWEEPS, warn=False)) == 3


# command -> (its arguments after the store, what it must have done with the good rows)
COMMANDS = {
    "report": (lambda root: ["report", str(root)], report_status),
    "compare": (lambda root: ["compare", str(root), str(root), "--no-page"], compared_both_points),
    "rerun": (lambda root: ["rerun", str(root), "--executor", "inline", "--no-progress"], reran_both_points),
    "resumed_sweep": (lambda root: [*SWEEP, "--N", "20,40,60", "--out", str(root)], resumed_with_one_point),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_commands_use_the_good_rows_name_the_damaged_part_once_and_leave_it(
        clean_store, tmp_path, capsys, damage, command):
    root, bad, data = damaged_copy(clean_store, tmp_path, damage)
    argv, check = COMMANDS[command]
    assert main(argv(root)) == 0
    out, err = capsys.readouterr()
    shown = check(root, out)
    warned = warnings_about(err, bad)
    assert len(warned) == 1, warned                       # once per process, however many reads
    assert DAMAGES[damage][1] in warned[0]
    assert bad.read_bytes() == data                       # nothing deleted or rewritten
    if command == "report":                               # and in the report's status section
        assert f"{bad}: {DAMAGES[damage][1]}" in shown and "1 damaged part file(s) skipped" in shown


@pytest.mark.parametrize("damage", DAMAGES)
def test_store_check_lists_damaged_parts_and_exits_1(clean_store, tmp_path, capsys, damage):
    root, bad, data = damaged_copy(clean_store, tmp_path, damage)
    assert main(["store", "check", str(root)]) == 1
    out, err = capsys.readouterr()
    assert f"damaged   {bad}: {DAMAGES[damage][1]}" in out
    assert "table sweeps: 2 parts, 2 rows, 1 damaged" in out and "1 problem(s)" in out
    assert err == "" and bad.read_bytes() == data


def test_store_check_of_a_clean_store_exits_0(clean_store, capsys):
    assert main(["store", "check", str(clean_store / SWEEPS)]) == 0     # its sweeps folder too
    out = capsys.readouterr().out
    assert "table sweeps: 1 parts, 2 rows, 0 damaged, 0 duplicated keys" in out and "store check: clean" in out
    assert main(["store", "check", str(clean_store / "missing")]) == 2


def test_an_older_part_without_later_columns_reads_with_nulls_and_checks_clean(clean_store, tmp_path, capsys):
    """Columns are added at the end of the schema: a part written before them is no damage."""
    [older] = [pq.read_table(p).drop_columns(["tol", "interleave_id", "interleave_variants"])
               for p in ResultStore(clean_store).parts(SWEEPS)[:1]]
    root = tmp_path / "results"
    (root / SWEEPS).mkdir(parents=True)
    pq.write_table(older, root / SWEEPS / "part-old.parquet")
    frame = ResultStore(root).read(SWEEPS)
    assert len(frame) == older.num_rows and frame["tol"].isna().all()
    assert main(["store", "check", str(root)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("change, reason", [
    (lambda t: t.drop_columns(["key"]), "no 'key' column"),
    (lambda t: t.set_column(t.schema.get_field_index("repeats"), "repeats", t.column("repeats").cast(pa.float64())),
     "column 'repeats' is double, the sweeps schema's is int64"),
    (lambda t: t.append_column("N", t.column("N")), "column 'N' appears 2 times"),
])
def test_parts_of_another_schema_are_refused_with_the_reason(clean_store, tmp_path, change, reason):
    root = tmp_path / "results"
    shutil.copytree(clean_store, root)
    store = ResultStore(root)
    good = pq.read_table(store.parts(SWEEPS)[0])
    pq.write_table(change(good), root / SWEEPS / "part-y.parquet")
    [damaged] = store.damaged(SWEEPS)
    assert damaged.path.name == "part-y.parquet" and damaged.reason == f"another schema: {reason}"
    assert len(store.read(SWEEPS)) == 2 and store.keys(SWEEPS) == set(good.column("key").to_pylist())


def test_inferred_tables_skip_a_part_that_does_not_unify(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append("flow_1d", [{"step": 0, "loss": 0.5}])
    store.append("flow_1d", [{"step": 1, "loss": 1}])                    # int with float: fine
    pq.write_table(pa.table({"step": ["two"], "loss": [0.1]}), tmp_path / "flow_1d" / "part-z.parquet")
    frame = store.read("flow_1d")
    assert list(frame["step"]) == [0, 1] and list(frame["loss"]) == [0.5, 1.0]
    assert "part-z.parquet: another schema: does not unify" in capsys.readouterr().err
    # the runs table is inferred too: a damaged part there does not stop a run's record
    (tmp_path / RUNS).mkdir()
    (tmp_path / RUNS / "part-0.parquet").write_bytes(b"")
    assert record_environment(store, "run-1", env={}) and store.keys(RUNS) == {"run-1"}


def test_keys_one_run_stored_twice_are_duplicates_retried_keys_are_not(tmp_path, capsys, test_ops):
    spec, measured = sweep_from_dict({"kind": "speed", "ops": "_test_raise,kernel_product", "backends": "numpy",
                                      "dtype": "float64", "N": "20", "repeats": 1, "warmup": 0})
    options = dict(executor="inline", out=str(tmp_path), progress=False)
    run_sweep(spec, Settings(**measured, **options))
    assert run_sweep(spec, Settings(**measured, retry_failed=True, **options)).counts == {"error": 1}
    store = ResultStore(tmp_path)
    assert store.read(SWEEPS)["key"].duplicated().sum() == 1       # the retried key, two runs
    assert main(["store", "check", str(tmp_path)]) == 0
    capsys.readouterr()
    row = pq.read_table(store.parts(SWEEPS)[0]).to_pylist()[0]
    store.append(SWEEPS, [row])                                    # the same run stores it again
    assert main(["store", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"duplicate sweeps: key {row['key']} stored 2 times by run {row['run_id']}" in out


def test_a_damaged_parquet_file_given_by_name_is_an_error_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "sweeps.parquet"
    path.write_bytes(b"PAR1 not really")
    assert main(["compare", str(path), str(path)]) == 2
    assert f"cannot read {path} as Parquet" in capsys.readouterr().err
