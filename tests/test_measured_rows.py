"""What each stored row means, pinned from the outside: computations of known cost (the
test ops ``_test_spin`` and ``_test_alloc``) swept through the real path (spec ->
run_sweep -> measure -> Parquet store -> read back), and the row checked against what
that cost must give. A measurement computed wrongly (per sample instead of per call, a
quartile off, a setting lost by rerun, an input left out of the hash) fails here.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kpbench.backends.torch_dense import TorchBackend
from kpbench.results.fingerprint import hash_mismatches, input_hash
from kpbench.results.schema import SWEEP_SCHEMA
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.inputs import make_data
from kpbench.bench.measure import run_point
from kpbench.bench.settings import MIN_SAMPLE_S, Settings
from kpbench.bench.rerun import rerun
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import Point
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from test_report import sweep_row

MiB = 1 << 20
CALL_S = 0.0002       # _test_spin: one call busy-waits this long (50 calls fill a 10 ms sample)
ALLOC_MIB = 32        # _test_alloc: bytes written by one call


def sweep(tmp_path, kind, op, blur, **settings):
    """Run a one-point sweep of a test op inline into ``tmp_path``; its stored row."""
    spec, measured = sweep_from_dict({"kind": kind, "ops": op, "backends": "numpy", "dtype": "float64",
                                      "N": "16", "blur": str(blur), **settings})
    run_sweep(spec, Settings(**measured, executor="inline", out=str(tmp_path), progress=False))
    rows = ResultStore(tmp_path).read(SWEEPS)
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def spin_calls() -> list:
    """(start, end) of every call of _test_spin so far, by the op's own clock."""
    return sys.modules["kpbench_plugin_test_ops"].SPIN_CALLS


def tried_numbers(number: int) -> list:
    """The calls per sample calibration tries before it settles on ``number``."""
    tried = [1]
    for factor in itertools.cycle((2, 2.5, 2)):
        if tried[-1] >= number:
            return tried
        tried.append(int(tried[-1] * factor))


@pytest.fixture   # per test (0.2 s): mutmut maps a mutant to the tests that ran its code
def spin_row(tmp_path, test_ops):
    """The stored row of 12 samples of _test_spin after 2 warm-up calls, and its calls."""
    spin_calls().clear()
    row = sweep(tmp_path, "speed", "_test_spin", CALL_S, repeats=12, warmup=2)
    assert row["status"] == "ok", row["error"]
    return row, list(spin_calls())


def test_a_speed_row_makes_the_calls_it_says_it_made(spin_row):
    """first call + warmup + calibration (1, 2, 5, ... calls) + repeats x number: the count
    pins repeats, warmup and number whatever the load of the machine."""
    row, calls = spin_row
    assert row["repeats"] == len(row["time_samples_s"]) == 12 and row["warmup"] == 2
    tried = tried_numbers(row["number"])
    assert tried[-1] == row["number"] >= 2, tried   # 1, 2, 5, 10, 20, 50, ...
    assert len(calls) == 1 + 2 + sum(tried) + 12 * row["number"]
    assert row["timer"] == "perf_counter"


def test_calibration_settles_on_the_first_number_of_calls_that_lasts_a_sample(spin_row):
    row, calls = spin_row
    tried, first = tried_numbers(row["number"]), 1 + 2
    spans = []
    for n in tried:
        spans.append(calls[first + n - 1][1] - calls[first][0])
        first += n
    # the timer brackets the calls: shorter tries lasted less than a sample by its clock too
    assert all(span < MIN_SAMPLE_S for span in spans[:-1]), spans
    assert spans[-1] >= 0.9 * MIN_SAMPLE_S, spans


def test_a_speed_row_stores_the_time_of_one_call(spin_row):
    """Each sample is its timer's span of `number` calls divided by `number`: never below
    the calls' own spans, above them by the loop's overhead only (not by `number` times)."""
    row, calls = spin_row
    number, samples = row["number"], list(row["time_samples_s"])
    timed = calls[len(calls) - 12 * number:]
    spans = [timed[i + number - 1][1] - timed[i][0] for i in range(0, len(timed), number)]
    overheads = [sample * number - span for sample, span in zip(samples, spans)]
    assert min(overheads) >= 0, overheads
    assert np.median(overheads) < 1e-3, overheads
    assert all(s >= CALL_S for s in samples), samples
    assert row["first_call_s"] >= calls[0][1] - calls[0][0] >= CALL_S


def test_the_statistics_of_a_row_are_those_of_its_samples(spin_row):
    row, _ = spin_row
    samples = np.array(row["time_samples_s"], dtype=np.float64)
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    assert row["time_median_s"] == median
    assert row["time_min_s"] == samples.min()
    assert (row["time_q1_s"], row["time_q3_s"]) == (q1, q3)
    assert row["time_iqr_s"] == pytest.approx(q3 - q1, rel=1e-12, abs=0)
    assert q1 < median < q3   # distinct quartiles: an IQR taken from the median would show


def test_a_memory_row_stores_the_bytes_one_call_allocates(tmp_path, test_ops):
    row = sweep(tmp_path, "memory", "_test_alloc", ALLOC_MIB)
    assert row["status"] == "ok", row["error"]
    if row["mem_method"] != "rss_delta":
        pytest.skip("/proc/self/clear_refs is not writable here: no RSS peak to check")
    # the array written, within the kernel's RSS bookkeeping (each thread's counters are
    # synced every 64 page faults: 0.27 MiB short measured here) and a few pages of
    # interpreter and NumPy overhead
    assert (ALLOC_MIB - 1) * MiB <= row["peak_mem_bytes"] <= (ALLOC_MIB + 4) * MiB
    assert row["time_median_s"] is None or math.isnan(row["time_median_s"])


# -- the stored types ------------------------------------------------------------------
EXACT_FLOAT = 0.1 + 2**-40          # not a float32: a float32 column would round it
EXACT_INT = 2**62 + 1               # not a float64: a float column would round it


def test_every_measured_number_is_stored_as_written(tmp_path):
    """float64 columns keep all 53 bits (the per-call samples included), int64 columns
    all 63: a narrower type in the schema would round what was measured."""
    row = {"key": "k", "status": "ok"}
    for field in SWEEP_SCHEMA:
        if pa.types.is_floating(field.type):
            row[field.name] = EXACT_FLOAT
        elif pa.types.is_integer(field.type):
            row[field.name] = EXACT_INT
    row["time_samples_s"] = [EXACT_FLOAT, 2 * EXACT_FLOAT]
    store = ResultStore(tmp_path)
    part = store.append(SWEEPS, [row])
    read = store.read(SWEEPS).iloc[0]
    for name, written in row.items():
        stored = read[name]
        assert (list(stored) if name == "time_samples_s" else stored) == written, name
    schema = pq.read_schema(part)
    assert schema.field("time_samples_s").type == pa.list_(pa.float64())
    for name in ("time_median_s", "time_min_s", "time_q1_s", "time_q3_s", "time_iqr_s",
                 "first_call_s", "rel_err", "value"):
        assert schema.field(name).type == pa.float64(), name
    for name in ("repeats", "number", "warmup", "peak_mem_bytes", "N", "M", "D", "seed"):
        assert schema.field(name).type == pa.int64(), name


def test_parts_are_named_by_their_utc_time_and_a_random_suffix(tmp_path):
    import re

    part = ResultStore(tmp_path).append(SWEEPS, [{"key": "k", "status": "ok"}])
    assert re.fullmatch(r"part-\d{8}T\d{12}-[0-9a-f]{12}\.parquet", part.name), part.name


@pytest.mark.parametrize("rows, message", [
    ([{"key": "k", "status": "done"}],
     "bad status 'done' \\(one of ok, oom, timeout, unsupported, skipped, error\\) in row k"),
])
def test_a_sweeps_row_with_an_unknown_status_is_refused_naming_the_statuses(tmp_path, rows, message):
    from kpbench.errors import KPBenchError

    with pytest.raises(KPBenchError, match=message):
        ResultStore(tmp_path).append(SWEEPS, rows)


def test_rows_of_an_inferred_table_must_form_one_table(tmp_path):
    from kpbench.errors import KPBenchError

    with pytest.raises(KPBenchError, match="rows for table 'flows' do not form one table: "):
        ResultStore(tmp_path).append("flows", [{"a": 1}, {"a": "one"}])


@pytest.mark.parametrize("name", ["_private", ".hidden", "a/b", ""])
def test_table_names_are_plain_folder_names(tmp_path, name):
    from kpbench.errors import KPBenchError

    with pytest.raises(KPBenchError, match="bad table name"):
        ResultStore(tmp_path).table_dir(name)


def test_a_damaged_part_is_named_with_the_store_to_check(tmp_path, capsys):
    store = ResultStore(tmp_path)
    store.append(SWEEPS, [{"key": "k", "status": "ok"}])
    (tmp_path / SWEEPS / "part-0-damaged.parquet").write_bytes(b"not parquet")
    assert len(store.read(SWEEPS)) == 1
    assert f"'kpbench store check {tmp_path}' lists every one" in capsys.readouterr().err


def test_a_part_of_another_type_names_the_type_cut_at_60_characters(tmp_path):
    wide = pa.struct([(f"field_{i}", pa.int64()) for i in range(8)])
    table = pa.table({"key": ["k"], "status": ["ok"],
                      "value": pa.array([{f"field_{i}": i for i in range(8)}], type=wide)})
    (tmp_path / SWEEPS).mkdir()
    pq.write_table(table, tmp_path / SWEEPS / "part-0-wide.parquet")
    [damaged] = ResultStore(tmp_path).damaged(SWEEPS)
    shown = str(wide)[:57] + "..."
    assert damaged.reason == f"another schema: column 'value' is {shown}, the sweeps schema's is double"


# -- inputs, provably the same problem ---------------------------------------------------
def test_the_input_hash_changes_with_every_generated_array():
    data = make_data(Point(op="kernel_product", backend="torch", kernel="gaussian",
                                     N=30, M=20, D=3, blur=0.1, p=None, reach=None,
                                     dtype="float64", device="cpu", seed=0, iters=None,
                                     scaling=None))
    arrays = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    assert set(arrays) >= {"x", "y", "b", "h", "c"}
    base = input_hash(list(arrays.values()), "float64")
    for name, array in arrays.items():
        nudged = array.copy()
        nudged.flat[-1] = np.nextafter(nudged.flat[-1], np.inf)   # one ulp, one entry
        changed = input_hash([nudged if n == name else a for n, a in arrays.items()], "float64")
        assert changed != base, f"the hash does not see {name}"


def test_a_row_hashes_every_generated_array_of_its_point():
    pt = Point(op="kernel_product", backend="numpy", kernel="gaussian", N=30, M=20, D=3,
               blur=0.1, p=None, reach=None, dtype="float64", device="cpu", seed=4,
               iters=None, scaling=None)
    row = run_point(pt, "accuracy", Settings(repeats=1, warmup=0))
    data = make_data(pt)
    every = [getattr(data, f.name) for f in dataclasses.fields(data)]
    assert row["status"] == "ok", row["error"]
    assert row["input_hash"] == input_hash(every, "float64")


# -- rerun -------------------------------------------------------------------------------
SETTINGS = dict(repeats=4, warmup=3, timeout_s=41.5, memory_budget=987654321)


def test_rerun_measures_again_with_every_stored_setting(tmp_path, test_ops, capsys):
    """Settings none of which is a default: repeats, warmup, threads, timeout, budget; the
    calibrated number follows from the known cost again. The run asked for is rerun, not
    the latest."""
    old = tmp_path / "old"
    for kind, op, blur in (("speed", "_test_spin", CALL_S), ("memory", "_test_alloc", 1)):
        spec, measured = sweep_from_dict({"kind": kind, "ops": op, "backends": "numpy", "dtype": "float64",
                                          "N": "16", "blur": str(blur), **SETTINGS})
        run_sweep(spec, Settings(**measured, executor="inline", out=str(old), progress=False,
                                   threads=2, cpus_per_point=2), run_id="the-run")
    later, later_measured = sweep_from_dict({"kind": "speed", "ops": "_test_spin", "backends": "numpy",
                                             "dtype": "float64", "N": "16", "blur": "0.0003", "repeats": 1})
    run_sweep(later, Settings(**later_measured, executor="inline", out=str(old), progress=False), run_id="later")
    capsys.readouterr()
    old_id, new_id, _ = rerun(old, "the-run", out=tmp_path / "new", executor="inline",
                              progress=False)
    assert old_id == "the-run"
    out = capsys.readouterr().out
    assert "sweep speed: 1 points, 1 run (1 ok)" in out and "sweep memory: 1 points" in out
    stored = ResultStore(old).read(SWEEPS)
    before = stored[stored["run_id"] == "the-run"].set_index("key")
    after = ResultStore(tmp_path / "new").read(SWEEPS).set_index("key")
    assert sorted(before.index) == sorted(after.index) and len(after) == 2
    assert set(after["run_id"]) == {new_id} != {old_id}
    for key, row in after.iterrows():
        assert row["status"] == "ok", row["error"]
        for column in ("warmup", "threads", "timeout_s", "memory_budget", "cxxflags", "sweep"):
            assert row[column] == before.loc[key, column], column
        assert row["threads"] == 2 and row["warmup"] == 3 and row["memory_budget"] == 987654321
    speed = after[after["sweep"] == "speed"].iloc[0]
    assert speed["repeats"] == len(speed["time_samples_s"]) == 4 and speed["timeout_s"] == 41.5
    assert speed["number"] in tried_numbers(speed["number"])


def test_a_long_error_is_cut_and_says_so():
    from kpbench.bench.measure.point import ERROR_MAX_CHARS, error_text

    assert error_text(ValueError("x" * (ERROR_MAX_CHARS - 12))) == "ValueError: " + "x" * (ERROR_MAX_CHARS - 12)
    cut = error_text(ValueError("x" * ERROR_MAX_CHARS))
    assert cut == ("ValueError: " + "x" * ERROR_MAX_CHARS)[:ERROR_MAX_CHARS] + " [...]"


def test_a_tensor_that_requires_grad_hashes_like_its_values():
    x = np.random.default_rng(0).random((4, 3))
    tensor = torch.tensor(x, requires_grad=True)
    assert input_hash([tensor], "float64") == input_hash([x], "float64")


def hashed_rows(count: int, hashes: list) -> pd.DataFrame:
    rows = [sweep_row(N=100 * (i + 1)) for i in range(count)]
    return pd.DataFrame([{**row, "input_hash": h} for row, h in zip(rows, hashes)])


@pytest.mark.parametrize("differ, limit, listed", [(3, 2, 2), (2, 2, 2), (11, None, 10)])
def test_hash_mismatches_list_at_most_limit_points_then_count_the_rest(differ, limit, listed):
    base = hashed_rows(12, [f"{i:016x}" for i in range(12)])
    new = hashed_rows(12, [f"{i + 100 * (i < differ):016x}" for i in range(12)])
    lines = hash_mismatches(base, new, **({} if limit is None else {"limit": limit}))
    assert lines[0] == (f"inputs DIFFER: {differ} of 12 points have other input hashes (another "
                        "data generator, NumPy or seed: these points did not solve the same problem)")
    assert len(lines) == 1 + listed + (differ > listed)
    assert lines[1] == f"  kernel_product torch gaussian D=3 blur=0.1 float32 cpu N=100: {0:016x} -> {100:016x}"
    if differ > listed:
        assert lines[-1] == f"  ... and {differ - listed} more"


def test_a_point_without_a_hash_on_either_side_is_not_compared():
    base = hashed_rows(3, ["a" * 16, "b" * 16, None])
    new = hashed_rows(3, ["a" * 16, None, "c" * 16])
    assert hash_mismatches(base, new) == [
        "inputs: 1 points with matching input hashes (same generated data)"]


# -- measure's own checks ------------------------------------------------------------------
def test_a_speed_row_keeps_the_value_of_the_computation(spin_row):
    row, _ = spin_row
    assert row["value"] == CALL_S    # _test_spin returns its blur


def test_proc_status_sizes_are_kibibytes():
    from kpbench.bench.measure.memory import _proc_status_bytes

    with open("/proc/self/status") as f:   # the size of the mapped libraries: stable
        kib = [int(line.split()[1]) for line in f if line.startswith("VmLib:")][0]
    assert _proc_status_bytes("VmLib") == kib * 1024
    with pytest.raises(RuntimeError, match="VmNothing not in /proc/self/status"):
        _proc_status_bytes("VmNothing")


def test_the_preflight_of_a_differentiated_softmin_loss_counts_its_kept_calls():
    from kpbench.backends import get_backend
    from kpbench.backends.losses_table import CALLS_KEPT_FOR_BACKWARD
    from kpbench.bench.measure.point import dense_estimate

    flow = Point(op="flow_step", backend="torch", kernel=None, loss="log_likelihood", N=300, M=500, D=3,
                 blur=0.1, p=2, reach=None, dtype="float32", device="cpu", seed=0, iters=None,
                 scaling=None)
    per_call = get_backend("torch").memory_estimate("softmin", 500, 500, 3, 4, grad=True)
    assert dense_estimate(flow, get_backend("torch")) == CALLS_KEPT_FOR_BACKWARD * per_call


class LossesOnly(TorchBackend):
    name = "losses-only-test"
    capabilities = dataclasses.replace(TorchBackend.capabilities, primitives=False)


def losses_only_row(**fields) -> dict:
    """The accuracy row of a point on LossesOnly, registered for this call alone."""
    from kpbench import backends

    backends.register_backend(LossesOnly.name, f"{__name__}:LossesOnly")
    try:
        pt = Point(**{**dict(backend=LossesOnly.name, N=20, M=20, D=3, blur=0.1, reach=None,
                             dtype="float32", device="cpu", seed=0, scaling=None), **fields})
        return run_point(pt, "accuracy", Settings(repeats=1, warmup=0))
    finally:
        backends._REGISTRY.pop(LossesOnly.name)
        backends._INSTANCES.pop(LossesOnly.name, None)


@pytest.mark.parametrize("op", ["kernel_product", "softmin"])
def test_a_backend_serving_losses_only_is_unsupported_for_the_primitives(op):
    row = losses_only_row(op=op, kernel="gaussian", p=2 if op == "softmin" else None, iters=None)
    assert row["status"] == "unsupported" and row["retryable"] is False
    assert row["error"] == f"backend {LossesOnly.name!r} serves losses only (no {op})"


def test_a_rerun_runs_on_the_stored_executor_only_when_the_run_had_one():
    from kpbench.bench.rerun import _stored_executor

    assert _stored_executor(pd.DataFrame({"executor": ["inline", "inline"]})) == "inline"
    assert _stored_executor(pd.DataFrame({"executor": ["inline", "ray"]})) == "ray"
    assert _stored_executor(pd.DataFrame({"executor": [None]})) == "ray"
    assert _stored_executor(pd.DataFrame({"key": ["k"]})) == "ray"


def test_check_rerun_says_when_the_build_flags_differ(tmp_path):
    from kpbench.bench.rerun import check_rerun
    from test_report import write_sweeps

    write_sweeps(tmp_path / "old", [sweep_row(time=1.0)], run_id="old", cxxflags="-O2")
    write_sweeps(tmp_path / "new", [sweep_row(time=1.0)], run_id="new", cxxflags="-O3")
    lines, differ = check_rerun(tmp_path / "old", "old", tmp_path / "new", "new")
    assert not differ
    assert ("build flags differ: CXXFLAGS ['-O2'] -> ['-O3'] (workers of an already running Ray "
            "cluster keep their own environment)") in lines


def rerun_rows(**changes) -> pd.DataFrame:
    """The rows of a one-point speed run as rerun.plan reads them, with ``changes``."""
    pt = Point(op="_test_spin", backend="numpy", kernel="test", N=16, M=16, D=3, blur=CALL_S,
               p=None, reach=None, dtype="float64", device="cpu", seed=0, iters=None,
               scaling=None)
    row = {**pt.as_row(), "key": pt.key("speed"), "sweep": "speed", "repeats": 3, "warmup": 1,
           "threads": 1, "timeout_s": 60.0, "memory_budget": None, "cxxflags": ""}
    return pd.DataFrame([{**row, **changes}])


@pytest.mark.parametrize("changes, message", [
    (dict(sweep=None), "^run R: 1 rows have no 'sweep' column \\(the kind of measure: speed \\| memory \\| accuracy\\)$"),
    (dict(warmup=None), "^cannot rerun run R: column 'warmup' is empty in all 1 speed rows"),
    (dict(N=None), "^row [0-9a-f]{20}: column 'N' is empty: cannot rerun it$"),
    (dict(seed=5), "^row [0-9a-f]{20}: its point columns give the key [0-9a-f]{20} \\(speed\\)"),
])
def test_a_row_that_cannot_be_rerun_is_named_with_why(changes, message):
    from kpbench.errors import KPBenchError
    from kpbench.bench.rerun import plan

    with pytest.raises(KPBenchError, match=message):
        plan(rerun_rows(**changes), "R")


def test_missing_columns_are_all_named():
    from kpbench.errors import KPBenchError
    from kpbench.bench.rerun import plan

    with pytest.raises(KPBenchError, match="^cannot rerun: the rows lack the column\\(s\\) warmup, threads$"):
        plan(rerun_rows().drop(columns=["warmup", "threads"]), "R")


def test_rerun_groups_come_in_the_order_of_their_settings():
    from kpbench.bench.rerun import plan

    rows = pd.concat([rerun_rows(threads=2), rerun_rows(threads=1, seed=1)], ignore_index=True)
    rows.loc[1, "key"] = Point(**{**rows.iloc[1][list(Point.__dataclass_fields__)].to_dict(),
                                  "seed": 1}).key("speed")
    assert [g.settings["threads"] for g in plan(rows, "R")] == [1, 2]


@pytest.mark.parametrize("op, error", [
    ("_test_memory_error", "MemoryError: test op out of host memory"),
    ("_test_cuda_oom", "OutOfMemoryError: test op out of CUDA memory"),
    ("_test_raise", "RuntimeError: test op raised on purpose"),
])
def test_running_out_of_memory_is_an_oom_row_any_other_exception_an_error_row(op, error, test_ops):
    pt = Point(op=op, backend="numpy", kernel="test", N=16, M=16, D=3, blur=0.1, p=None,
               reach=None, dtype="float64", device="cpu", seed=0, iters=None, scaling=None)
    row = run_point(pt, "speed", Settings(repeats=1, warmup=0))
    assert (row["status"], row["error"], row["retryable"]) == (
        "error" if op == "_test_raise" else "oom", error, True)


def test_a_loss_a_backend_cannot_compute_is_unsupported_by_design_not_retryable():
    row = losses_only_row(op="sinkhorn", kernel="sinkhorn", p=2, iters=3)
    assert row["status"] == "unsupported" and row["retryable"] is False
    assert row["error"] == f"{LossesOnly.name} has no sinkhorn (and no primitives)"


def test_an_estimate_past_int64_is_left_out_of_its_column_and_given_in_the_refusal():
    n = 2**31 - 1
    pt = Point(op="kernel_product", backend="torch", kernel="gaussian", N=n, M=n, D=3, blur=0.1,
               p=None, reach=None, dtype="float32", device="cpu", seed=0, iters=None, scaling=None)
    row = run_point(pt, "speed", Settings(repeats=1, warmup=0))
    assert row["status"] == "skipped" and row["mem_estimate_bytes"] is None
    assert str(3 * n * n * 4) in row["error"]


def test_a_rerun_refused_names_the_run(tmp_path):
    from kpbench.errors import KPBenchError
    from test_report import write_sweeps

    write_sweeps(tmp_path, [sweep_row(time=1.0)], run_id="old-run")
    with pytest.raises(KPBenchError, match="^cannot rerun run old-run: column 'warmup' is empty"):
        rerun(tmp_path, executor="inline", progress=False)
