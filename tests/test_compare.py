"""``kpbench compare`` on real Parquet stores: exit 1 exactly when a ratio crosses the threshold."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from kpbench.cli import compare as compare_cli
from kpbench.results import compare
from kpbench.results.selection import load_sweeps, select_run
from test_report import run_cli, sweep_row, write_sweeps

MiB = 1 << 20


def two_stores(tmp_path, base_rows, new_rows):
    write_sweeps(tmp_path / "base", base_rows, run_id="base-run")
    write_sweeps(tmp_path / "new", new_rows, run_id="new-run")
    return str(tmp_path / "base"), str(tmp_path / "new")


@pytest.mark.parametrize("metric", ["time", "mem"])
@pytest.mark.parametrize("factor, expected", [(1.09, 0), (1.11, 1), (0.5, 0)])
def test_exit_status_follows_the_threshold(tmp_path, capsys, metric, factor, expected):
    base = [sweep_row(N=1000, time=1.0, mem=100 * MiB), sweep_row(N=2000, time=2.0, mem=200 * MiB)]
    changed = dict(time=1.0 * factor if metric == "time" else 1.0,
                   mem=100 * MiB * factor if metric == "mem" else 100 * MiB)
    new = [sweep_row(N=1000, **changed), sweep_row(N=2000, time=2.0, mem=200 * MiB)]
    code = run_cli(compare_cli, ["compare", *two_stores(tmp_path, base, new), "--threshold", "1.1"])
    out = capsys.readouterr().out
    assert code == expected, out
    assert ("REGRESSION" in out) == (expected == 1)
    marked = [line for line in out.splitlines() if "N=1e3" in line][0]
    assert marked[0] == {1.09: " ", 1.11: "+", 0.5: "-"}[factor]


def test_threshold_option_changes_the_verdict(tmp_path, capsys):
    paths = two_stores(tmp_path, [sweep_row(time=1.0)], [sweep_row(time=1.2)])
    assert run_cli(compare_cli, ["compare", *paths]) == 1             # default 1.1
    assert run_cli(compare_cli, ["compare", *paths, "--threshold", "1.3"]) == 0


def test_ok_to_failed_is_a_regression_failed_to_ok_is_not(tmp_path, capsys):
    base = [sweep_row(N=1000, time=1.0), sweep_row(N=2000, status="oom")]
    paths = two_stores(tmp_path, base, [sweep_row(N=1000, status="timeout"), sweep_row(N=2000, time=3.0)])
    assert run_cli(compare_cli, ["compare", *paths]) == 1
    out = capsys.readouterr().out
    assert "status 1;" in out and "status 1, error" in out     # one regression, one improvement
    assert [line for line in out.splitlines() if "N=1e3" in line][0].startswith("!")

    paths = two_stores(tmp_path / "b", [sweep_row(status="oom")], [sweep_row(time=3.0)])
    assert run_cli(compare_cli, ["compare", *paths]) == 0


def test_error_ratios_need_both_errors_above_the_floor_and_never_fail(tmp_path):
    base = [sweep_row(N=1000, time=1.0, err=1e-13), sweep_row(N=2000, time=1.0, err=1e-7)]
    new = [sweep_row(N=1000, time=1.0, err=1e-6), sweep_row(N=2000, time=1.0, err=1e-6)]
    result = compare.compare(select_run(load_sweeps(two_stores(tmp_path, base, new)[0]), None),
                             select_run(load_sweeps(tmp_path / "new"), None))
    by_n = {p.label.split("N=")[1].split()[0]: p for p in result.points}
    assert "err" not in by_n["1e3"].ratios                     # 1e-13 is below the 1e-12 floor
    assert by_n["2e3"].ratios["err"] == pytest.approx(10.0)
    assert by_n["2e3"].regressed == ["err"] and not result.failed


def test_memory_below_the_floor_is_noise(tmp_path):
    paths = two_stores(tmp_path, [sweep_row(time=1.0, mem=4096)], [sweep_row(time=1.0, mem=40960)])
    assert run_cli(compare_cli, ["compare", *paths]) == 0
    assert run_cli(compare_cli, ["compare", *paths, "--mem-floor", "1000"]) == 1


def test_points_on_one_side_only_are_noted_and_ignored(tmp_path, capsys):
    base = [sweep_row(N=1000, time=1.0), sweep_row(N=5000, time=1.0)]
    new = [sweep_row(N=1000, time=1.0), sweep_row(N=9000, time=50.0)]
    assert run_cli(compare_cli, ["compare", *two_stores(tmp_path, base, new)]) == 0
    out = capsys.readouterr().out
    assert "note: 1 points only in the baseline (ignored): kernel_product torch" in out
    assert "N=5e3" in out and "N=9e3" in out
    assert "1 points compared" in out


def test_run_ids_inside_one_store_and_sweeps_dir_paths(tmp_path, capsys):
    root = tmp_path / "results"
    write_sweeps(root, [sweep_row(time=1.0)], run_id="aaaa1111")
    write_sweeps(root, [sweep_row(time=2.0)], run_id="bbbb2222")
    assert run_cli(compare_cli, ["compare", str(root), str(root), "--run-id", "aaaa", "latest"]) == 1
    assert run_cli(compare_cli, ["compare", str(root / "sweeps"), str(root),
                                 "--run-id", "bbbb2222", "aaaa1111"]) == 0   # an improvement
    capsys.readouterr()
    assert run_cli(compare_cli, ["compare", str(root), str(root), "--run-id", "cccc", "latest"]) == 2
    assert "no run 'cccc'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "0.9"], "threshold must be a finite number > 1"),
    ([], "has no sweep rows"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    write_sweeps(tmp_path / "base", [sweep_row(time=1.0)])
    (tmp_path / "empty").mkdir()
    other = tmp_path / ("base" if argv else "empty")
    assert run_cli(compare_cli, ["compare", str(tmp_path / "base"), str(other), *argv]) == 2
    assert message in capsys.readouterr().err


def test_no_point_in_common_is_an_error_not_a_pass(tmp_path, capsys):
    paths = two_stores(tmp_path, [sweep_row(N=1000, time=1.0)], [sweep_row(N=2000, time=1.0)])
    assert run_cli(compare_cli, ["compare", *paths]) == 2
    assert "no sweep point in common" in capsys.readouterr().err


def test_missing_path_exits_2(tmp_path, capsys):
    assert run_cli(compare_cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- the gate: a ratio past the threshold counts only where the distributions differ ----

def timed_row(N=1000, samples=None, q=None, **kw):
    """A speed row with per-call samples (median from them) or stored quartiles."""
    row = sweep_row(N=N, time=float(np.median(samples)) if samples is not None else kw.pop("time"), **kw)
    if samples is not None:
        row["time_samples_s"] = list(map(float, samples))
    if q:
        row["time_q1_s"], row["time_q3_s"] = q
    return row


def compare_rows(tmp_path, base, new, **kw):
    paths = two_stores(tmp_path, base, new)
    return compare.compare(*(select_run(load_sweeps(p), None) for p in paths), **kw)


def test_spread_out_samples_past_the_threshold_are_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = 1.0 + 0.5 * rng.random(12)          # 1.0 .. 1.5 s: a noisy machine
    new = base[::-1] * 1.15                    # median 1.15x, but the same spread
    result = compare_rows(tmp_path, [timed_row(samples=base)], [timed_row(samples=new)])
    [point] = result.points
    assert point.ratios["time"] > 1.1 and point.noise == ["time"] and not result.failed
    assert point.evidence.startswith("rank test p=") and compare.mark(point) == "?"


def test_a_shifted_distribution_is_a_regression(tmp_path):
    base = np.linspace(1.0, 1.05, 12)
    result = compare_rows(tmp_path, [timed_row(samples=base)], [timed_row(samples=base * 1.2)])
    [point] = result.points
    assert point.regressed == ["time"] and result.failed
    assert "12 vs 12 samples" in point.evidence


def test_too_few_samples_for_the_rank_test_fall_back_to_the_iqr(tmp_path):
    base = np.linspace(1.0, 1.05, 5)       # 5 vs 5: the exact test cannot reach p < 0.002
    assert not compare.rank_test_can_decide(5, 5, compare.P_THRESHOLD)
    assert compare.rank_test_can_decide(10, 10, compare.P_THRESHOLD)
    result = compare_rows(tmp_path, [timed_row(samples=base)], [timed_row(samples=base * 1.2)])
    assert result.points[0].evidence == "IQRs apart" and result.failed


@pytest.mark.parametrize("new_q, failed", [((1.15, 1.4), False), ((1.3, 1.4), True)])
def test_stored_quartiles_decide_without_samples(tmp_path, new_q, failed):
    result = compare_rows(tmp_path, [timed_row(time=1.0, q=(0.9, 1.2))],
                          [timed_row(time=1.35, q=new_q)])
    assert result.failed is failed
    assert result.points[0].evidence == ("IQRs apart" if failed else "IQRs overlap")


def test_an_improvement_needs_differing_distributions_too(tmp_path):
    result = compare_rows(tmp_path, [timed_row(time=1.0, q=(0.5, 1.5))], [timed_row(time=0.8, q=(0.6, 1.0))])
    assert result.points[0].improved == [] and result.points[0].noise == ["time"]


def test_rows_from_another_environment_are_refused_unless_allowed(tmp_path, capsys):
    write_sweeps(tmp_path / "base", [sweep_row(time=1.0)], run_id="b", host="node-a", torch_version="2.12.0")
    write_sweeps(tmp_path / "new", [sweep_row(time=1.0)], run_id="n", host="node-b", torch_version="2.13.0")
    paths = [str(tmp_path / "base"), str(tmp_path / "new")]
    assert run_cli(compare_cli, ["compare", *paths]) == 2
    err = capsys.readouterr().err
    assert "host: node-a -> node-b" in err and "torch_version: 2.12.0 -> 2.13.0" in err
    assert "--allow-env-mismatch" in err
    assert run_cli(compare_cli, ["compare", *paths, "--allow-env-mismatch"]) == 0
    assert "note: environments differ (allowed): host: node-a -> node-b" in capsys.readouterr().out


def test_an_environment_unknown_on_one_side_is_not_a_mismatch():
    assert compare.env_differences([({"host": "a", "gpu": None}, {"host": "a", "gpu": "H100"})]) == []



@pytest.mark.parametrize("median, broken_sample, problem", [
    (float("nan"), None, "time_median_s is missing or NaN"),
    (None, None, "time_median_s is missing or NaN"),
    (float("inf"), None, "time_median_s is inf"),
    (0.0, None, "time_median_s is 0 (not positive)"),
    (10.0, float("nan"), "time_samples_s holds 1 of 12 samples that are missing or NaN"),
    (10.0, float("-inf"), "time_samples_s holds 1 of 12 samples that are -inf"),
])
def test_ok_rows_without_a_usable_time_are_an_error_of_their_run(tmp_path, capsys, median,
                                                                broken_sample, problem):
    """The new run is 10x slower, sample by sample, but its medians are broken: that is no
    "no regression" (exit 0) but an error naming the run, the key and the column."""
    base = np.linspace(1.0, 1.05, 12)
    new_row = timed_row(samples=base * 10)
    new_row["time_median_s"] = median
    if broken_sample is not None:
        new_row["time_samples_s"][3] = broken_sample
    paths = two_stores(tmp_path, [timed_row(samples=base)], [new_row])
    assert run_cli(compare_cli, ["compare", *paths, "--no-page"]) == 2
    out, err = capsys.readouterr()
    assert f"new run new-run, key {new_row['key']}: {problem}" in err and "regression" not in out
    # memory and accuracy rows time nothing: their empty medians are not broken
    rows = [sweep_row(mem=100 * MiB)]
    write_sweeps(tmp_path / "mem_base", rows, sweep="memory")
    write_sweeps(tmp_path / "mem_new", rows, sweep="memory")
    assert run_cli(compare_cli, ["compare", str(tmp_path / "mem_base"), str(tmp_path / "mem_new")]) == 0

# -- paired comparison of interleaved rows ------------------------------------------------

def paired_rows(base_samples, new_samples, session="s1"):
    rows = [timed_row(samples=base_samples), timed_row(samples=new_samples)]
    for row in rows:
        row["interleave_id"] = session
    return rows


def test_interleaved_rows_are_compared_round_by_round(tmp_path):
    """A machine whose speed swings 1.5x from round to round: unpaired, a 1.25x slower run
    hides in that spread; paired (the same rounds), every round is 1.25x and it is flagged."""
    drift = np.tile([1.0, 1.5], 8)             # 16 rounds
    base, new = drift * 1e-3, drift * 1.25e-3
    unpaired = compare_rows(tmp_path / "u", [timed_row(samples=base)], [timed_row(samples=new)])
    assert not unpaired.failed and unpaired.points[0].noise == ["time"]
    paired = compare_rows(tmp_path / "p", *[[row] for row in paired_rows(base, new)])
    [point] = paired.points
    assert point.ratios["time"] == pytest.approx(1.25) and point.regressed == ["time"]
    assert point.evidence.startswith("paired over 16 interleaved rounds")


def test_paired_noise_is_not_a_regression(tmp_path):
    rng = np.random.default_rng(3)
    drift = 1 + rng.random(16)                  # the machine: 1x .. 2x
    base = drift * (1 + 0.05 * rng.standard_normal(16))
    new = drift * 1.15 * (1 + 0.3 * rng.standard_normal(16))   # 1.15x on average, very noisy
    [point] = compare_rows(tmp_path, *[[row] for row in paired_rows(base, new)]).points
    assert "time" not in point.regressed


def test_rows_of_different_sessions_are_not_paired():
    base, new = paired_rows([1.0] * 12, [1.2] * 12)
    assert compare.paired_samples(base, new) is not None
    new["interleave_id"] = "another"
    assert compare.paired_samples(base, new) is None
    new["interleave_id"], new["time_samples_s"] = "s1", [1.2] * 11
    assert compare.paired_samples(base, new) is None   # rounds must match one to one


# -- shown on real sweeps: identical runs pass, a 1.3x slower backend fails everywhere ----

GATE_SPEC = dict(kind="speed", ops=["kernel_product"], backends=["numpy", "torch"],
                 dtype=["float32"], blur=[0.1], N=[150, 300])


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory):
    """Three identical variants and one with torch slowed 1.3x (tests/plugins/slowdown.py,
    under the name torch), measured as one interleaved sweep: their samples alternate
    round by round, so the machine's drift falls on all four alike (asv's ``continuous``
    interleaves its two commits the same way, by processes)."""
    if os.environ.get("KPBENCH_TIMING_TESTS") != "1":
        pytest.skip("timing demonstration, opt-in (KPBENCH_TIMING_TESTS=1): real measurements "
                    "(~1 min), not a unit test; see README 'Interleaved sweeps: the gate on a "
                    "shared machine'")
    from conftest import SLOWDOWN_PLUGIN
    from kpbench.bench.interleave import Variant
    from kpbench.bench.plan import SweepSpec
    from kpbench.bench.settings import Settings
    from kpbench.bench.sweep import run_sweep

    root = tmp_path_factory.mktemp("gate")
    slowed = Variant("slowed", env={"KPBENCH_PLUGINS": SLOWDOWN_PLUGIN, "KPBENCH_SLOWDOWN": "torch=1.3"})
    variants = [Variant("same0"), Variant("same1"), Variant("same2"), slowed]
    result = run_sweep(SweepSpec(**GATE_SPEC), Settings(out=str(root), progress=False, repeats=30, warmup=2),
                       variants=variants)
    assert all(counts == {"ok": 4} for counts in result.counts.values()), result.summary()
    runs = [select_run(load_sweeps(root / v.name), None) for v in variants]
    return runs[:3], runs[3]


def test_three_identical_sweeps_compared_pairwise_flag_nothing(gate_runs):
    runs, _ = gate_runs
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        result = compare.compare(runs[i], runs[j])
        assert not result.failed, compare.format_comparison(result)
        assert len(result.points) == 4
        assert all(p.evidence.startswith("paired") for p in result.points if p.evidence)


def test_a_13x_slower_backend_is_flagged_on_every_point(gate_runs):
    runs, slowed = gate_runs
    result = compare.compare(runs[0], slowed)
    flagged = {p.label.split()[1] for p in result.points if "time" in p.regressed}
    by_backend = {}
    for p in result.points:
        by_backend.setdefault(p.label.split()[1], []).append("time" in p.regressed)
    assert by_backend == {"numpy": [False, False], "torch": [True, True]}, compare.format_comparison(result)
    assert flagged == {"torch"} and result.failed


def test_compare_writes_a_page_with_the_ratio_plot(tmp_path, capsys):
    from kpbench.results import compare_page

    base = [sweep_row(N=1000, time=1.0), sweep_row(N=2000, time=1.0), sweep_row(N=4000, time=1.0)]
    new = [sweep_row(N=1000, time=1.5), sweep_row(N=2000, time=1.0), sweep_row(N=4000, status="oom")]
    paths = two_stores(tmp_path, base, new)
    assert run_cli(compare_cli, ["compare", *paths]) == 1     # the exit code is unchanged
    page = tmp_path / "new" / "report" / "compare.html"
    assert f"page: {page}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "plotly.js v" in text and "<script src" not in text and "REGRESSION" in text
    result = compare.compare(*(select_run(load_sweeps(p), None) for p in paths))
    assert sorted(compare_page.verdict(p) for p in result.points) == ["ok -> failed", "regression", "unchanged"]
    figure = compare_page.ratio_figure(result)
    assert {t.name for t in figure.data} == {"regression", "ok -> failed", "unchanged"}
    [regression] = [t for t in figure.data if t.name == "regression"]
    assert list(regression.y) == [1.5]
    assert run_cli(compare_cli, ["compare", *paths, "--page", str(tmp_path / "c.html")]) == 1
    assert (tmp_path / "c.html").is_file()
    page.unlink()
    assert run_cli(compare_cli, ["compare", *paths, "--no-page"]) == 1 and not page.exists()


# -- what compare reads of the samples (a million rows compare in seconds) -----------------

def test_samples_reach_only_the_points_whose_verdict_uses_them(tmp_path, monkeypatch):
    """Points within the threshold are decided from their medians: their rows never carry
    the samples into compare_point; points past it (rank test) and interleaved pairs do."""
    steady = np.linspace(1.0, 1.05, 12)
    base = [timed_row(N=1000, samples=steady), timed_row(N=2000, samples=steady),
            *paired_rows(steady, steady * 1.01)[:1]]
    new = [timed_row(N=1000, samples=steady * 1.05), timed_row(N=2000, samples=steady * 2),
           *paired_rows(steady, steady * 1.01)[1:]]
    base[2]["N"], new[2]["N"] = 4000, 4000
    for row in base + new:
        row["key"] = f"N{row['N']}"
    given = {}
    real = compare.compare_point
    monkeypatch.setattr(compare, "compare_point", lambda b, n, settings: given.setdefault(
        b["N"], ("time_samples_s" in b, "time_samples_s" in n)) and real(b, n, settings))
    result = compare_rows(tmp_path, base, new)
    assert given == {1000: (False, False), 2000: (True, True), 4000: (True, True)}
    assert [p.regressed for p in sorted(result.points, key=lambda p: p.label)] == [[], ["time"], []]


@pytest.mark.parametrize("broken", [None, float("nan"), float("inf"), 0.0, -1.0, "x"])
def test_broken_samples_are_refused_within_the_threshold_too(broken):
    """The samples of a point decided from its medians are still checked (vectorised): a
    broken one is refused with the words of timing_problems, never skipped."""
    import pandas as pd

    good = timed_row(samples=np.linspace(1.0, 1.05, 12), run_id="r0")
    bad = dict(good, run_id="r1", time_samples_s=list(good["time_samples_s"]))
    bad["time_samples_s"][3] = broken
    [problem] = compare.timing_problems(bad)
    with pytest.raises(compare.BrokenRows, match=f": {re.escape(problem)}$"):
        compare.compare(pd.DataFrame([good]), pd.DataFrame([bad]))
    assert not compare.compare(pd.DataFrame([good]), pd.DataFrame([good])).failed


def test_a_store_against_itself_is_read_once(tmp_path, capsys, monkeypatch):
    from kpbench.results import selection

    paths = two_stores(tmp_path, [sweep_row(time=1.0)], [sweep_row(time=1.0)])
    reads = []
    real = selection.load_run
    monkeypatch.setattr(selection, "load_run", lambda *a, **kw: reads.append(a[0]) or real(*a, **kw))
    assert run_cli(compare_cli, ["compare", paths[0], paths[0], "--no-page"]) == 0
    assert reads == [paths[0]]
    assert run_cli(compare_cli, ["compare", *paths, "--no-page"]) == 0
    assert reads == [paths[0], *paths]
