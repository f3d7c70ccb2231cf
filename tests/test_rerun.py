"""Rerunning a stored run from its rows; input hashes; the stored environment of a run."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kpbench.errors import KPBenchError
from kpbench.results import meta
from kpbench.results.fingerprint import hash_mismatches, input_hash
from kpbench.results.selection import load_sweeps, select_run
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench import rerun as rr
from kpbench.bench.plan import SweepSpec
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.main import main

SPEC = dict(kind="accuracy", ops=["kernel_product", "sinkhorn"], backends=["numpy", "torch"],
            N=[30], iters=[5], dtype=["float32", "float64"])
MEASURED = dict(warmup=0, timeout_s=120.0)


@contextlib.contextmanager
def fresh_thread_env():
    """The thread variables unset, as in a fresh process (measure pins them per point, and
    the environment of a run is recorded before its first point)."""
    from kpbench.bench.measure import THREAD_VARIABLES

    with pytest.MonkeyPatch.context() as patch:
        for variable in THREAD_VARIABLES:
            patch.delenv(variable, raising=False)
        yield


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A small accuracy run (6 points) in its own store: (store path, run_id)."""
    out = tmp_path_factory.mktemp("stored")
    with fresh_thread_env():
        result = run_sweep(SweepSpec(**SPEC), Settings(executor="inline", out=str(out),
                                                       progress=False, threads=1, **MEASURED))
    assert result.counts == {"ok": 6}
    return out, result.run_id


def copy_rows(src, dst, change=None):
    """A store at ``dst`` holding the rows of ``src``, each passed through ``change``."""
    store = ResultStore(src)
    rows = pa.concat_tables([pq.read_table(p) for p in store.parts(SWEEPS)]).to_pylist()
    for row in rows:
        if change:
            change(row)
    ResultStore(dst).append(SWEEPS, rows)
    return dst


# -- input hashes -----------------------------------------------------------------------
def test_input_hash_sees_values_dtype_shape_and_ignores_the_container():
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 3)), rng.random((4, 3))
    h = input_hash([x, y], "float32")
    assert h == input_hash([x.copy(), y.copy()], "float32") and len(h) == 16
    assert h == input_hash([torch.tensor(x, dtype=torch.float32), torch.tensor(y)], "float32")
    assert h != input_hash([x, y], "float64")
    assert h != input_hash([x.reshape(3, 5), y], "float32")
    x2 = x.copy()
    x2[0, 0] = np.nextafter(x2[0, 0], 2.0)      # one ulp in float64 ...
    assert input_hash([x2, y]) != input_hash([x, y])
    assert input_hash([x2, y], "float32") == h  # ... gone after the cast to float32


def test_rows_carry_hashes_settings_and_determinism(stored_run):
    out, run_id = stored_run
    rows = load_sweeps(out)
    assert rows["input_hash"].str.len().eq(16).all()
    # one problem per (op, N, seed, dtype): numpy and torch float64 share their inputs
    f64 = rows[rows["dtype"] == "float64"].groupby("op")["input_hash"].nunique()
    assert (f64 == 1).all()
    assert rows.groupby("op")["input_hash"].nunique().eq(2).all()   # float32 is another
    assert rows["deterministic"].all()
    assert set(rows["warmup"]) == {0} and set(rows["threads"]) == {1}
    assert set(rows["timeout_s"]) == {120.0} and rows["memory_budget"].isna().all()


def test_hash_mismatches_names_the_points_that_differ(stored_run):
    rows = select_run(load_sweeps(stored_run[0]), None)
    same = hash_mismatches(rows, rows)
    assert same == ["inputs: 6 points with matching input hashes (same generated data)"]
    other = rows.copy()
    other.loc[0, "input_hash"] = "0" * 16
    lines = hash_mismatches(rows, other)
    assert lines[0].startswith("inputs DIFFER: 1 of 6 points")
    assert "0000000000000000" in lines[1] and rows.loc[0, "op"] in lines[1]
    assert hash_mismatches(rows, other.assign(input_hash=None)) == []


# -- rerun ------------------------------------------------------------------------------
def test_plan_rebuilds_the_points_and_settings_of_the_run(stored_run):
    out, run_id = stored_run
    old_id, rows = rr.load_run(out, run_id[:6])
    assert old_id == run_id
    (group,) = rr.plan(rows, old_id)
    assert group.kind == "accuracy"
    assert group.settings == {"warmup": 0, "threads": 1, "timeout_s": 120.0,
                              "memory_budget": None, "cxxflags": ""}
    assert sorted(p.key("accuracy") for p in group.points) == sorted(rows["key"])
    spec, settings = group.spec(), group.run_settings()
    assert (spec.kind, settings.warmup, settings.timeout_s) == ("accuracy", 0, 120.0)


def test_rerun_elsewhere_measures_the_same_problem_and_values(stored_run, tmp_path, capsys):
    out, run_id = stored_run
    new_store = tmp_path / "rerun"
    with fresh_thread_env():
        assert main(["rerun", str(out), "--out", str(new_store), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "inputs: 6 points with matching input hashes" in printed
    assert f"kpbench compare {out} {new_store} --run-id {run_id} " in printed
    old = select_run(load_sweeps(out), run_id).set_index("key").sort_index()
    new = load_sweeps(new_store).set_index("key").sort_index()
    assert list(new.index) == list(old.index) and new["run_id"].nunique() == 1
    assert new["run_id"].iloc[0] != run_id and set(new["executor"]) == {"inline"}
    # deterministic CPU points on the same machine: the same bits
    assert new["value"].tolist() == old["value"].tolist()
    assert meta.load_environment(new_store, new["run_id"].iloc[0])["python"]["version"]
    # kpbench compare says the two runs solved the same problem, to the same values
    new_id = new["run_id"].iloc[0]
    main(["compare", str(out), str(new_store), "--run-id", run_id, new_id])
    printed = capsys.readouterr().out
    assert "inputs: 6 points with matching input hashes (same generated data)" in printed
    assert "values: 6 points within their tolerance" in printed
    assert "environment: the same (stored environments of both runs)" in printed


def test_dry_run_lists_the_points_and_settings(stored_run, capsys):
    out, run_id = stored_run
    assert main(["rerun", str(out), "--run-id", run_id, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# accuracy: 6 points, settings {'warmup': 0, 'threads': 1,")
    assert len(lines) == 7 and all("Point(op=" in line for line in lines[1:])
    assert load_sweeps(out)["run_id"].nunique() == 1          # nothing ran


def test_rerun_into_the_same_store_adds_a_second_run(tmp_path, stored_run, capsys):
    store = copy_rows(stored_run[0], tmp_path / "same")
    assert main(["rerun", str(store), "--no-progress"]) == 0
    runs = load_sweeps(store)["run_id"]
    assert runs.nunique() == 2 and runs.value_counts().tolist() == [6, 6]


def test_rerun_exits_1_when_the_inputs_differ(tmp_path, stored_run, capsys):
    def other_hash(row):
        if row["op"] == "sinkhorn" and row["backend"] == "torch":
            row["input_hash"] = "f" * 16

    store = copy_rows(stored_run[0], tmp_path / "old", other_hash)
    assert main(["rerun", str(store), "--out", str(tmp_path / "new"), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "inputs DIFFER: 2 of 6 points" in printed and "ffffffffffffffff ->" in printed
    main(["compare", str(store), str(tmp_path / "new")])
    printed = capsys.readouterr().out
    assert "inputs DIFFER: 2 of 6 points" in printed
    assert "environment: not recorded for the baseline run" in printed   # a copied store


@pytest.mark.parametrize("column", ["warmup", "threads", "timeout_s", "cxxflags"])
def test_a_setting_no_row_recorded_is_an_error_naming_it(tmp_path, stored_run, capsys, column):
    store = copy_rows(stored_run[0], tmp_path / "old", lambda r: r.update({column: None}))
    assert main(["rerun", str(store), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert f"column {column!r} is empty in all 6 accuracy rows" in err
    assert not (tmp_path / "new").exists()


def test_failed_rows_take_the_settings_of_their_kind(tmp_path, stored_run):
    def drop_settings(row):
        if row["op"] == "sinkhorn":
            row.update(warmup=None, threads=None, status="error", error="RuntimeError: boom")

    store = copy_rows(stored_run[0], tmp_path / "old", drop_settings)
    old_id, rows = rr.load_run(store)
    (group,) = rr.plan(rows, old_id)
    assert group.settings["warmup"] == 0 and len(group.points) == 6


def test_ambiguous_or_broken_rows_are_refused(tmp_path, stored_run):
    def two_warmups(row):
        row["warmup"] = {"kernel_product": 0, "sinkhorn": None}[row["op"]] \
            if row["backend"] == "numpy" else 3

    store = copy_rows(stored_run[0], tmp_path / "a", two_warmups)
    with pytest.raises(KPBenchError, match="rows have no 'warmup' and the others several"):
        rr.plan(*reversed(rr.load_run(store)))
    store = copy_rows(stored_run[0], tmp_path / "b", lambda r: r.update(N=r["N"] + 1))
    with pytest.raises(KPBenchError, match="its point columns give the key"):
        rr.plan(*reversed(rr.load_run(store)))
    store = copy_rows(stored_run[0], tmp_path / "c", lambda r: r.update(dtype=None))
    with pytest.raises(KPBenchError, match="column 'dtype' is empty"):
        rr.plan(*reversed(rr.load_run(store)))


def test_rerun_sets_the_stored_build_flags_while_it_runs(monkeypatch):
    monkeypatch.setenv("CXXFLAGS", "-O1")
    with rr.build_flags("-ffast-math"):
        assert meta.host_metadata()["cxxflags"] == "-ffast-math"
    assert meta.host_metadata()["cxxflags"] == "-O1"
    with pytest.raises(KPBenchError, match="stored build flags: '-B/tmp' is not an allowed"):
        with rr.build_flags("-O3 -B/tmp"):
            pass
    assert meta.host_metadata()["cxxflags"] == "-O1"


@pytest.mark.parametrize("threads", [0, -3])
def test_stored_thread_counts_must_be_positive(tmp_path, stored_run, capsys, threads):
    """They become OMP_NUM_THREADS & co. (and Ray CPUs): a bad one is refused, nothing runs."""
    store = copy_rows(stored_run[0], tmp_path / "old", lambda r: r.update(threads=threads))
    assert main(["rerun", str(store), "--out", str(tmp_path / "new")]) == 2
    assert f"column 'threads': {threads} is not a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# -- the environment of a run -------------------------------------------------------------
def test_environment_is_stored_once_per_run(stored_run, tmp_path):
    out, run_id = stored_run
    env = meta.load_environment(out, run_id)
    assert env["packages"]["numpy"] == np.__version__
    assert torch.__version__.startswith(env["packages"]["torch"].split("+")[0])
    assert env["cpu"]["model"] and "flags" in env["cpu"]
    assert meta.load_environment(out / "sweeps", run_id) == env
    assert meta.load_environment(out, "no-such-run") is None
    store = ResultStore(tmp_path)
    assert meta.record_environment(store, "r1", {"a": 1}) is True
    assert meta.record_environment(store, "r1", {"a": 2}) is False
    assert json.loads(store.read(meta.RUNS)["environment"].iloc[0]) == {"a": 1}


def test_env_diff_lists_what_changed(monkeypatch):
    a = {"packages": {"numpy": "2.0", "torch": "2.1"}, "cpu": {"flags": "sse avx avx2"},
         "env": {"CXXFLAGS": "-O3"}}
    b = {"packages": {"numpy": "2.1", "torch": "2.1", "scipy": "1.14"},
         "cpu": {"flags": "sse avx avx512f"}, "env": {}}
    assert meta.env_diff(a, b) == [
        "cpu.flags: +avx512f -avx2",
        "env.CXXFLAGS: -O3 -> (absent)",
        "packages.numpy: 2.0 -> 2.1",
        "packages.scipy: (absent) -> 1.14",
    ]
    assert meta.env_diff(a, a) == []
    assert meta.env_diff(a, None) == ["environment: not recorded for the new run (cannot compare)"]
    monkeypatch.setenv("KPBENCH_X", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("UNRELATED_VAR", "1")
    env = meta.result_env_vars()
    assert env["KPBENCH_X"] == "1" and env["OMP_NUM_THREADS"] == "2" and "UNRELATED_VAR" not in env


# -- determinism --------------------------------------------------------------------------
def test_determinism_table_claims_only_what_was_measured():
    from kpbench.backends.determinism import deterministic
    from kpbench.results.determinism import tolerance

    assert deterministic("torch", "float32", "cpu") and deterministic("numpy", "float64", "cpu")
    assert not deterministic("torch", "float32", "cuda") and not deterministic("keops", "float64", "cuda:1")
    assert not deterministic("numpy", "float32", "cpu") and not deterministic("cuda", "float32", "cuda")
    assert tolerance("float64", True, same_host=True) == 0.0
    assert tolerance("float64", True) < tolerance("float64", False) < tolerance("float32", False)
    assert tolerance("float32", None) == tolerance("float32", False)


@pytest.mark.parametrize("op", ["kernel_product", "sinkhorn_grad"])
def test_points_claimed_deterministic_give_the_same_bits_twice(op):
    from kpbench.backends import available_backends
    from kpbench.backends.determinism import DETERMINISTIC
    from kpbench.bench import ops
    from kpbench.bench.inputs import make_data
    from kpbench.bench.plan import Point

    sink = op.startswith("sinkhorn")
    for (backend, device), dtypes in DETERMINISTIC.items():
        if backend not in available_backends() or (backend == "numpy" and op.endswith("_grad")):
            continue
        for dtype in (d for d, claimed in dtypes.items() if claimed):
            point = Point(op=op, backend=backend, kernel="sinkhorn" if sink else "gaussian",
                          N=300, M=300, D=3, blur=0.05, p=2 if sink else None, reach=None,
                          dtype=dtype, device=device, seed=0, iters=None,
                          scaling=0.5 if sink else None)
            data = make_data(point)
            a, b = (ops.prepare(point, data) for _ in range(2))
            first, second = (p.summarize(p.call()).vector for p in (a, b))
            assert np.array_equal(first, second), (backend, dtype)


def test_value_changes_use_the_tolerance_of_the_point(stored_run):
    from kpbench.results.determinism import value_changes

    rows = select_run(load_sweeps(stored_run[0]), None)
    assert value_changes(rows, rows) == ["values: 6 points within their tolerance"]
    other = rows.copy()
    f64 = other.index[(other["dtype"] == "float64") & (other["op"] == "sinkhorn")
                      & (other["backend"] == "torch")][0]
    other.loc[f64, "value"] *= 1 + 1e-12          # same host, deterministic: must be bit-equal
    lines = value_changes(rows, other)
    assert lines[0] == "values MOVED beyond their tolerance at 1 of 6 points"
    assert "relative 1e-12 > 0, deterministic, same host" in lines[1]
    other["host"] = "elsewhere"                   # another machine: 1e-9 in float64
    assert value_changes(rows, other) == ["values: 6 points within their tolerance"]
