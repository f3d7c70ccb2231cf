"""``kpbench compare`` on real Parquet stores: exit 1 exactly when a ratio crosses the threshold."""
from __future__ import annotations

import pytest

from kpbench.results import compare, compare_cli
from kpbench.results.report import load_sweeps, select_run
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
