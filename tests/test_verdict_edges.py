"""Verdicts at their edges, on stores built to contain exactly the case: compare's
thresholds and floors (just inside, exactly on, just past), the rank tests where they can
and cannot decide, and ``--retry-failed`` deciding on the latest row of a key."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from kpbench.results import compare
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import done_keys, expand
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from test_compare import compare_rows, timed_row
from test_report import sweep_row

MiB = 1 << 20
T = compare.DEFAULT_THRESHOLD


def one_point(tmp_path, base: dict, new: dict, **kw) -> compare.PointComparison:
    [point] = compare_rows(tmp_path, [base], [new], **kw).points
    return point


# -- thresholds and floors ---------------------------------------------------------------
@pytest.mark.parametrize("new_time, verdict", [
    (T, None), (np.nextafter(T, 2), "regressed"),                 # ratio exactly t: no change
    (1 / T, None), (np.nextafter(1 / T, 0), "improved"),          # exactly 1/t: no change
])
def test_a_time_ratio_exactly_on_the_threshold_is_no_change(tmp_path, new_time, verdict):
    point = one_point(tmp_path, sweep_row(time=1.0), sweep_row(time=float(new_time)))
    assert point.ratios["time"] == new_time   # rows without spread: the ratio alone decides
    assert (point.regressed, point.improved) == (
        ["time"] if verdict == "regressed" else [], ["time"] if verdict == "improved" else [])


@pytest.mark.parametrize("new_mem, compared", [(MiB - 1, False), (MiB, True)])
def test_memory_is_compared_from_the_floor_on(tmp_path, new_mem, compared):
    """Twice the memory: a regression once the larger peak reaches the floor, jitter below."""
    point = one_point(tmp_path, sweep_row(time=1.0, mem=new_mem / 2),
                      sweep_row(time=1.0, mem=new_mem))
    assert ("mem" in point.ratios) is compared
    assert point.regressed == (["mem"] if compared else []) and point.failing is compared


@pytest.mark.parametrize("base_err, compared", [(compare.ERR_FLOOR, False),
                                                (np.nextafter(compare.ERR_FLOOR, 1), True)])
def test_errors_are_compared_above_the_floor_and_never_fail(tmp_path, base_err, compared):
    point = one_point(tmp_path, sweep_row(time=1.0, err=float(base_err)),
                      sweep_row(time=1.0, err=1e-6))
    assert ("err" in point.ratios) is compared
    assert point.regressed == (["err"] if compared else []) and not point.failing
    assert compare.mark(point) == ("~" if compared else " ")


# -- where the rank tests can and cannot decide ------------------------------------------
def test_the_rank_test_can_decide_exactly_when_its_smallest_p_is_below_the_threshold():
    smallest = 2 / 924                       # 6 vs 6, fully separated: 2 / C(12, 6)
    assert not compare.rank_test_can_decide(6, 6, smallest)
    assert compare.rank_test_can_decide(6, 6, np.nextafter(smallest, 1))
    assert not compare.rank_test_can_decide(6, 6, compare.P_THRESHOLD)
    assert compare.rank_test_can_decide(5, 8, compare.P_THRESHOLD)    # 2 / 1287
    assert not compare.rank_test_can_decide(4, 9, compare.P_THRESHOLD)  # 2 / 715
    assert not compare.rank_test_can_decide(0, 20, compare.P_THRESHOLD)


@pytest.mark.parametrize("factor, verdict", [(1.2, "regressed"), (1 / 1.2, "improved")])
def test_seven_samples_a_side_are_decided_by_the_two_sided_rank_test(tmp_path, factor, verdict):
    base = np.linspace(1.0, 1.05, 7)
    point = one_point(tmp_path, timed_row(samples=base), timed_row(samples=base * factor))
    assert getattr(point, verdict) == ["time"]
    assert point.evidence == "rank test p=0.00058 (7 vs 7 samples)"   # 2 / C(14, 7)


def test_six_samples_a_side_cannot_be_and_fall_back_to_the_iqrs(tmp_path):
    base = np.linspace(1.0, 1.05, 6)
    point = one_point(tmp_path, timed_row(samples=base), timed_row(samples=base * 1.2))
    assert point.evidence == "IQRs apart" and point.regressed == ["time"]


@pytest.mark.parametrize("rounds, paired", [(9, False), (10, True)])
def test_interleaved_rounds_are_paired_from_ten_on(tmp_path, rounds, paired):
    """The signed-rank test's smallest two-sided p over n rounds is 2 / 2**n: 0.0039 for 9
    (cannot reach 0.002, the unpaired rank test decides), 0.00195 for 10."""
    base = np.linspace(1.0, 1.05, rounds)
    rows = [timed_row(samples=base), timed_row(samples=base * 1.2)]
    for row in rows:
        row["interleave_id"] = "session"
    point = one_point(tmp_path, *rows)
    assert point.regressed == ["time"]
    if paired:
        assert point.evidence == f"paired over {rounds} interleaved rounds, signed-rank p=0.002"
    else:
        assert point.evidence.startswith("rank test p=")
        assert point.evidence.endswith(f"({rounds} vs {rounds} samples)")


# -- --retry-failed: the latest row of a key decides ---------------------------------------
def spin_points():
    spec, measured = sweep_from_dict({"kind": "speed", "ops": "_test_spin", "backends": "numpy",
                                      "dtype": "float64", "N": "16", "blur": "0.001,0.0011",
                                      "repeats": 1, "warmup": 0})
    return spec, expand(spec)


def stored(point, status: str, retryable, minute: int) -> dict:
    return {**point.as_row(), "key": point.key("speed"), "status": status, "retryable": retryable,
            "run_id": f"run-{minute}",
            "started_at": dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc)}


def test_retry_failed_redoes_a_key_whose_latest_row_failed_not_one_that_failed_before(
        tmp_path, test_ops):
    spec, (fixed, broken) = spin_points()
    store = ResultStore(tmp_path)
    # the newer rows are written first: "latest" is by start time, not by part order
    store.append(SWEEPS, [stored(fixed, "ok", False, 2), stored(broken, "timeout", True, 2)])
    store.append(SWEEPS, [stored(fixed, "error", True, 1), stored(broken, "ok", False, 1)])
    assert done_keys(store, retry_failed=True) == {fixed.key("speed")}
    assert done_keys(store) == {fixed.key("speed"), broken.key("speed")}
    result = run_sweep(spec, Settings(repeats=1, warmup=0, executor="inline", out=str(tmp_path),
                                      progress=False, retry_failed=True))
    assert result.counts == {"ok": 1} and result.already_stored == 1
    rows = store.read(SWEEPS)
    assert (rows["key"] == broken.key("speed")).sum() == 3
    assert (rows["key"] == fixed.key("speed")).sum() == 2


@pytest.mark.parametrize("status, retried", [("error", True), ("timeout", True), ("oom", True),
                                             ("unsupported", False), ("skipped", False),
                                             ("ok", False)])
def test_rows_from_before_the_retryable_column_retry_exactly_the_failures(tmp_path, status, retried):
    _, (point, _) = spin_points()
    ResultStore(tmp_path).append(SWEEPS, [stored(point, status, None, 1)])
    assert (point.key("speed") not in done_keys(ResultStore(tmp_path), retry_failed=True)) is retried


# -- p exactly on the threshold: "different" needs p strictly below ------------------------
def test_a_rank_test_p_equal_to_the_threshold_is_not_a_difference(tmp_path):
    base = list(np.linspace(1.0, 1.06, 7))
    new = [b * 1.2 for b in base]
    base[-1], new[0] = new[0], base[-1]            # one pair crosses: U = 1, p = 4 / C(14, 7)
    p = 4 / 3432
    point = one_point(tmp_path, timed_row(samples=sorted(base)), timed_row(samples=sorted(new)),
                      p_threshold=p)
    assert point.noise == ["time"] and point.evidence == f"rank test p={p:.2g} (7 vs 7 samples)"
    point = one_point(tmp_path / "b", timed_row(samples=sorted(base)), timed_row(samples=sorted(new)),
                      p_threshold=np.nextafter(p, 1))
    assert point.regressed == ["time"]


def test_a_signed_rank_p_equal_to_the_threshold_is_not_a_difference(tmp_path):
    base = np.linspace(1.0, 1.1, 11)
    logs = np.array([-0.01] + [0.1 + 0.01 * i for i in range(10)])   # one round faster
    rows = [timed_row(samples=base), timed_row(samples=base * np.exp(logs))]
    for row in rows:
        row["interleave_id"] = "session"
    p = 4 / 2048                                   # the smallest |log| negative: T- = 1
    point = one_point(tmp_path, *rows, p_threshold=p)
    assert point.noise == ["time"]
    assert point.evidence == f"paired over 11 interleaved rounds, signed-rank p={p:.2g}"
    assert one_point(tmp_path / "b", *rows, p_threshold=np.nextafter(p, 1)).regressed == ["time"]


def test_the_gate_s_p_threshold_reaches_the_rank_test(tmp_path):
    base = np.linspace(1.0, 1.05, 5)    # 5 vs 5: p = 2 / 252 at best, decided only from 0.0079
    point = one_point(tmp_path, timed_row(samples=base), timed_row(samples=base * 1.2),
                      p_threshold=0.05)
    assert point.evidence == "rank test p=0.0079 (5 vs 5 samples)" and point.regressed == ["time"]


def test_paired_rounds_give_the_time_ratio_and_only_the_time_ratio(tmp_path):
    """The same times, one round later: the ratio of the medians is 1, the median of the
    per-round ratios (11/1, 1/2, 2/3, ... 10/11) is 6/7; the memory ratio stays the memory's."""
    base = np.arange(1.0, 12.0)
    rows = [timed_row(samples=base, mem=100 * MiB), timed_row(samples=np.roll(base, 1), mem=100 * MiB)]
    for row in rows:
        row["interleave_id"] = "session"
    point = one_point(tmp_path, *rows)
    assert point.ratios["time"] == pytest.approx(6 / 7) and point.ratios["mem"] == 1.0


def test_identical_interleaved_rounds_are_the_same_distribution():
    rows = [timed_row(samples=[1.0] * 10), timed_row(samples=[1.0] * 10)]
    for row in rows:
        row["interleave_id"] = "session"
    assert compare.distributions_differ(*rows) == (
        False, "paired over 10 interleaved rounds, signed-rank p=1")


@pytest.mark.parametrize("new_err, compared", [(compare.ERR_FLOOR, False), (2e-12, True)])
def test_the_new_error_must_be_above_the_floor_too(tmp_path, new_err, compared):
    point = one_point(tmp_path, sweep_row(time=1.0, err=1e-6), sweep_row(time=1.0, err=new_err))
    assert ("err" in point.ratios) is compared


def test_a_zero_time_of_an_untimed_row_is_not_compared():
    """Memory rows time nothing: a 0 there is no time to divide by (and no broken row)."""
    base = sweep_row(time=0.0, mem=100 * MiB, sweep="memory")
    new = sweep_row(time=1.0, mem=100 * MiB, sweep="memory")
    for b, n in ((base, new), (new, base)):
        [point] = compare.compare(frame(b), frame(n)).points
        assert "time" not in point.ratios and point.ratios["mem"] == 1.0


# -- refusals and what they say ------------------------------------------------------------
def frame(*rows):
    return pd.DataFrame(list(rows))



@pytest.mark.parametrize("kw, message", [
    (dict(threshold=1.0), "threshold must be a finite number > 1"),
    (dict(threshold=float("inf")), "threshold must be a finite number > 1"),
    (dict(p_threshold=0.0), "p_threshold must be in \\(0, 1\\)"),
    (dict(p_threshold=1.0), "p_threshold must be in \\(0, 1\\)"),
])
def test_gate_settings_out_of_range_are_refused(kw, message):
    row = sweep_row(time=1.0)
    with pytest.raises(compare.KPBenchError, match=message):
        compare.compare(frame(row), frame(row), **kw)


def test_each_side_is_named_when_it_has_no_rows_or_several_per_key():
    row = sweep_row(time=1.0)
    with pytest.raises(compare.KPBenchError, match="^the baseline has no sweep rows$"):
        compare.compare(frame(), frame(row))
    with pytest.raises(compare.KPBenchError, match="^the new has no sweep rows$"):
        compare.compare(frame(row), frame())
    with pytest.raises(compare.KPBenchError, match="^the new has several rows per point key; pick one run first$"):
        compare.compare(frame(row), frame(row, row))


def test_an_environment_mismatch_says_what_differed_and_how_to_compare_anyway():
    base, new = sweep_row(time=1.0, host="a"), sweep_row(time=1.0, host="b")
    with pytest.raises(compare.EnvironmentMismatch) as refused:
        compare.compare(frame(base), frame(new))
    assert str(refused.value) == (
        "the two sides were measured in different environments: host: a -> b. Their timings are "
        "not comparable; pass --allow-env-mismatch (allow_env_mismatch=True) to compare them anyway.")
    assert compare.env_differences([({"host": ""}, {"host": "b"})]) == []   # "" is unknown


@pytest.mark.parametrize("broken, listed", [(10, 10), (11, 10)])
def test_broken_rows_are_listed_up_to_ten_then_counted(broken, listed):
    base = [sweep_row(N=100 + i, time=1.0, run_id="r0", sweep="speed") for i in range(broken)]
    new = [sweep_row(N=100 + i, time=float("nan"), run_id="r1", sweep="speed") for i in range(broken)]
    with pytest.raises(compare.BrokenRows) as refused:
        compare.compare(frame(*base), frame(*new))
    text = str(refused.value)
    assert text.startswith(f"{broken} ok row(s) without a usable time, a broken run: new run r1, key ")
    assert text.count("time_median_s is missing or NaN") == listed
    assert text.endswith(f"; ... and {broken - listed} more") is (broken > listed)
    base[0]["time_median_s"] = 0.0
    with pytest.raises(compare.BrokenRows, match="^2 ok row\\(s\\) without a usable time, a broken run: "
                       "baseline run r0, key .*: time_median_s is 0 \\(not positive\\); new run r0, key "):
        compare.compare(frame(base[0]), frame(base[0]))


@pytest.mark.parametrize("row, problems", [
    ({"sweep": "speed", "time_median_s": None}, ["time_median_s is missing or NaN"]),
    ({"sweep": "speed", "time_median_s": float("inf")}, ["time_median_s is inf"]),
    ({"sweep": "speed", "time_median_s": -1.0}, ["time_median_s is -1 (not positive)"]),
    ({"sweep": "memory", "time_median_s": None}, []),
    ({"sweep": "memory", "time_median_s": 1.0, "time_samples_s": [1.0, 0.0]},
     ["time_samples_s holds 1 of 2 samples that are 0 (not positive)"]),
])
def test_timing_problems_name_each_unusable_value_exactly(row, problems):
    assert compare.timing_problems(row) == problems


# -- which rows a comparison reads (kpbench.results.selection) -------------------------------
def test_rows_are_read_from_a_store_its_sweeps_folder_a_parquet_folder_or_file(tmp_path):
    from kpbench.results.selection import load_sweeps
    from kpbench.results.store import SWEEPS
    from test_report import write_sweeps

    write_sweeps(tmp_path / "store", [sweep_row(time=1.0), sweep_row(N=2000, time=2.0)])
    part = sorted((tmp_path / "store" / SWEEPS).rglob("part-*.parquet"))[0]   # in its run's folder
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "rows.parquet").write_bytes(part.read_bytes())
    for path in (tmp_path / "store", tmp_path / "store" / SWEEPS, tmp_path / "exported", part):
        frame = load_sweeps(path)
        assert sorted(frame["N"]) == [1000, 2000], path
    (tmp_path / "empty").mkdir()
    assert load_sweeps(tmp_path / "empty").empty
    (tmp_path / "empty" / "notes.txt").write_text("no rows here")   # a folder without Parquet
    assert load_sweeps(tmp_path / "empty").empty


def test_columns_a_parquet_file_lacks_are_read_as_nulls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kpbench.results.schema import COLUMNS
    from kpbench.results.selection import load_sweeps

    pq.write_table(pa.table({"key": ["k"], "status": ["ok"]}), tmp_path / "old.parquet")
    frame = load_sweeps(tmp_path / "old.parquet")
    assert list(frame.columns[:2]) == ["key", "status"] and set(COLUMNS) <= set(frame.columns)
    assert frame.drop(columns=["key", "status"]).isna().all().all()


def test_a_file_that_is_not_parquet_is_refused_by_name(tmp_path):
    from kpbench.results.selection import load_sweeps

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(compare.KPBenchError, match="notes.txt is neither a results directory nor a Parquet file"):
        load_sweeps(tmp_path / "notes.txt")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(compare.KPBenchError, match="cannot read .*broken.parquet as Parquet: .*[Pp]arquet"):
        load_sweeps(tmp_path / "broken.parquet")


def test_a_selected_run_is_indexed_afresh_and_an_ambiguous_prefix_is_named():
    from kpbench.results.selection import select_run

    rows = [sweep_row(N=1000 + i, time=1.0, run_id=f"run-{i}", started_at=pd_time(i)) for i in range(3)]
    stored = frame(*rows).iloc[::-1]
    picked = select_run(stored, "run-1")
    assert list(picked.index) == [0] and "index" not in picked and picked["N"].tolist() == [1001]
    with pytest.raises(compare.KPBenchError,
                       match="^an ambiguous run id prefix 'run' in these results; runs: run-0, run-1, run-2$"):
        select_run(stored, "run")


def pd_time(minute: int):
    return dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("row, expected", [
    ({"time_samples_s": 1.0}, []),                                   # not a list: no samples
    ({"time_samples_s": [1.0, float("nan"), None, 2.0]}, [1.0, 2.0]),
])
def test_samples_are_the_finite_values_of_a_list(row, expected):
    from kpbench.results.selection import samples

    assert samples(row) == expected


@pytest.mark.parametrize("row, expected", [
    ({"time_q1_s": 1.0, "time_q3_s": 3.0, "time_samples_s": [5.0, 6.0]}, (1.0, 3.0)),
    ({"time_q1_s": 1.0, "time_q3_s": None, "time_samples_s": [1.0, 2.0, 3.0, 4.0, 5.0]}, (2.0, 4.0)),
    ({"time_samples_s": [1.0, 2.0]}, (1.25, 1.75)),
    ({"time_samples_s": [1.0], "time_median_s": 1.0, "time_iqr_s": 0.4}, (0.8, 1.2)),
    ({"time_median_s": 1.0}, None),
])
def test_quartiles_come_from_the_row_then_its_samples_then_its_median_and_iqr(row, expected):
    from kpbench.results.selection import quartiles

    assert quartiles(row) == (pytest.approx(expected) if expected else None)
