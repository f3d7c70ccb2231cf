"""Verdicts at their edges, on stores built to contain exactly the case: compare's
thresholds and floors (just inside, exactly on, just past), the rank tests where they can
and cannot decide, and ``--retry-failed`` deciding on the latest row of a key."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from kpbench.results import compare
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.suite.spec import expand, spec_from_dict
from kpbench.suite.sweep import RunOptions, done_keys, run_sweep
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
    spec = spec_from_dict({"kind": "speed", "ops": "_test_spin", "backends": "numpy",
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
    result = run_sweep(spec, RunOptions(executor="inline", out=str(tmp_path), progress=False,
                                        retry_failed=True))
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
