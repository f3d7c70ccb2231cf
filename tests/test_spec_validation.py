"""Specs are checked before anything runs, and no measured row is lost (issue 26, item 5).

Every bad value is refused with the key or flag, the value and what is allowed (exit 2
from the CLI); a row the store refuses never takes the rows of its batch with it.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from kpbench.errors import KPBenchError
from kpbench.results.meta import run_metadata
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.cli import sweep as sweep_cli
from kpbench.cli.main import main
from kpbench.bench.limits import MAX_POINTS, MAX_SIZE, MAX_VALUES, SEED_LIMIT
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import SweepSpec
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import RowRecorder, run_sweep


def _run_cli(argv, capsys) -> tuple[int, str]:
    code = main(["sweep", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("values, message", [
    ({"N": "1e30"},
     r"N = '1e30' in sweep 1 of suite.toml: N must be whole numbers from 1 to 2147483647 \(2\*\*31-1\)"),
    ({"M": [2**31]}, r"M = \[2147483648\] .*from 1 to 2147483647"),
    ({"D": "3e9"}, "D must be whole numbers from 1 to 2147483647"),
    ({"iters": "1e30,scaling"}, "iters must be whole numbers from 1 to 2147483647"),
    ({"seed": "1e30"}, r"seed must be whole numbers from 0 to 4294967295 \(2\*\*32-1\)"),
    ({"seed": "-1"}, "seed must be whole numbers from 0 to 4294967295"),
    ({"N": "1..1e400"}, r"bad range '1..1e400': need 1 <= start <= end <= 2147483647"),
    ({"N": "1e2..1e10:3"}, r"bad range '1e2..1e10:3'"),
    ({"N": "1..10:20000"}, r"the count after ':' must be from 1 to 10000, got 20000"),
    ({"memory_budget": "1e400"}, r"memory size must be from 1 to 9223372036854775807 \(2\*\*63-1\)"),
    ({"memory_budget": 1e400}, "memory size must be"),
    # the schedule's words mean "none" for iters only (a budget of "conv" was no budget)
    ({"memory_budget": "conv"}, "cannot read a memory size from 'conv'"),
    ({"tol": "none,scaling"}, "not a number"),
    ({"reach": "conv"}, "not a number"),
    ({"timeout_s": float("inf")}, r"timeout_s must be seconds in \(0, 604800\]"),
    ({"repeats": 10**6}, "repeats must be whole numbers from 1 to 10000"),
])
def test_values_beyond_the_limits_are_refused_naming_key_value_and_range(values, message):
    with pytest.raises(KPBenchError, match=message):
        sweep_from_dict(values, where="sweep 1 of suite.toml")


def test_values_at_the_limits_are_accepted_and_a_range_is_counted_before_it_is_built():
    spec, measured = sweep_from_dict({"N": f"1..10:{MAX_VALUES}", "M": [MAX_SIZE], "seed": [0, SEED_LIMIT - 1],
                                      "iters": [MAX_SIZE, "scaling"]})
    assert spec.N == list(range(1, 11)) and spec.seed == [0, SEED_LIMIT - 1]
    # a count far past the limit is refused on its digits (no 10**5000-long list)
    with pytest.raises(KPBenchError, match="the count after ':' must be from 1 to"):
        sweep_from_dict({"N": "1..10:" + "9" * 5000})


def test_a_sweep_of_more_points_than_allowed_is_refused_before_expanding():
    with pytest.raises(KPBenchError, match=f"has 20000 points, more than the {MAX_POINTS} allowed"):
        SweepSpec(backends=["numpy", "torch"], N=list(range(1, 101)), seed=list(range(100)))


@pytest.mark.parametrize("toml, message", [
    ("sweep = 5\n", r"'sweep' must be \[\[sweep\]\] tables"),
    ("sweep = [1, 2]\n", r"'sweep' must be \[\[sweep\]\] tables"),
    ("run = 3\n[[sweep]]\nN = [10]\n", r"'run' must be a \[run\] table"),
    ('[run]\nresume = "false"\n[[sweep]]\nN = [10]\n', r"resume = 'false' in \[run\] of .*must be a boolean"),
    ("[run]\nprogress = 1\n[[sweep]]\nN = [10]\n", "progress = 1 .*must be a boolean"),
    ('[run]\ncpus_per_point = "2"\n[[sweep]]\nN = [10]\n', r"cpus_per_point = '2' .*must be a fraction in \(0, 1\] or a whole number"),
    ("[run]\ncolour = 1\n[[sweep]]\nN = [10]\n", r"unknown key\(s\) in \[run\] .*colour; known: .*cpus_per_point"),
    ("[[sweep]]\nN = [true]\n", "N = \\[True\\] in sweep 1 .*must be a number or a string, or a list"),
    ("[[sweep]]\nN = [[100]]\n", "must be a number or a string, or a list of them, got list"),
    ("[[sweep]]\nN = []\n", "an empty list"),
    ("[[sweep]]\nbackends = [1]\n", "backends = \\[1\\] .*must be a string"),
    ("[[sweep]]\nrepeats = true\n", "repeats = True .*must be an integer or a string"),
    ("[[sweep]]\nwarmup = 1.5\n", "warmup = 1.5 .*must be an integer or a string, got float"),
    ("[[sweep]]\nkind = true\n", "kind = True .*must be a string"),
])
def test_toml_values_of_the_wrong_type_are_refused(tmp_path, capsys, toml, message):
    config = tmp_path / "suite.toml"
    config.write_text(toml)
    code, err = _run_cli(["--config", str(config), "--dry-run"], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize("argv, message", [
    (["--N", "1e30"], r"--N '1e30': .*from 1 to 2147483647 \(2\*\*31-1\)"),
    (["--seed=1e30"], r"--seed '1e30': seed must be whole numbers from 0 to 4294967295"),
    (["--seed=-1"], r"--seed '-1': seed must be whole numbers from 0"),
    (["--N", "1..1e400"], r"--N '1..1e400': bad range"),
    (["--N", "1..10:200000000", "--dry-run"], r"--N '1..10:200000000': .*from 1 to 10000"),
    (["--memory-budget", "1e400"], r"--memory-budget '1e400': a memory size must be from 1 to"),
    (["--timeout", "inf"], r"--timeout inf: timeout_s must be seconds"),
    (["--threads", "-3"], r"--threads -3: threads must be whole numbers from 1 to 4096"),
    (["--cpus-per-point", "0"], r"--cpus-per-point 0.0: cpus_per_point must be a fraction in \(0, 1\] or a whole number"),
    (["--cpus-per-point", "1.5"], r"--cpus-per-point 1.5: cpus_per_point must be a fraction in \(0, 1\] or a whole number"),
    (["--num-cpus", "0"], r"--num-cpus 0: num_cpus must be whole numbers from 1"),
])
def test_bad_flags_exit_2_with_the_flag_the_value_and_what_is_allowed(tmp_path, capsys, argv, message):
    code, err = _run_cli(["speed", "--backends", "numpy", "--N", "10", "--repeats", "1",
                          "--warmup", "0", "--executor", "inline", "--no-progress",
                          "--out", str(tmp_path), *argv], capsys)
    assert code == 2, err
    assert re.search(message, err), err
    assert not (tmp_path / SWEEPS).exists()   # refused before anything ran


def test_cpus_or_gpus_per_point_beyond_every_node_are_refused_before_submitting():
    from kpbench.bench.executors.ray import check_node_fits

    class P:
        def __init__(self, device):
            self.device = device

    two_cpus = [{"CPU": 2.0}, {"CPU": 1.0}]
    check_node_fits([P("cpu")], Settings(cpus_per_point=2), two_cpus)
    with pytest.raises(KPBenchError, match=r"--cpus-per-point 4: no node .* has 4 CPUs \(the largest has 2\)"):
        check_node_fits([P("cpu")], Settings(cpus_per_point=4), two_cpus)
    with pytest.raises(KPBenchError, match=r"--gpus-per-point 2: .*the largest has 1"):
        check_node_fits([P("cuda")], Settings(gpus_per_point=2), [{"CPU": 8.0, "GPU": 1.0}])
    # no GPU at all: the CUDA points become "unsupported" rows, as before
    check_node_fits([P("cuda")], Settings(gpus_per_point=2), two_cpus)


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for this process, root included (chattr +i where modes do not bind)."""
    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        try:
            (folder / "probe").touch()
        except OSError:
            return folder
        (folder / "probe").unlink()   # root: modes do not bind, the immutable flag does
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only here (root, no chattr)")
        return folder

    yield make
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("locked", ["out", "sweeps"])
def test_a_folder_that_takes_no_file_is_refused_before_measuring(tmp_path, read_only, capsys, locked):
    out = tmp_path / "results"
    folder = read_only(out if locked == "out" else out / SWEEPS)
    code, err = _run_cli(["speed", "--backends", "numpy", "--N", "10", "--executor", "inline",
                          "--no-progress", "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"cannot write to the folder '{folder}'" in err and f"--out '{out}'" in err
    assert not list(out.glob("*/part-*.parquet"))   # not even the run's environment


def test_a_row_the_store_refuses_keeps_its_batch_and_is_stored_as_an_error_row(tmp_path):
    store = ResultStore(tmp_path)
    meta = run_metadata(run_id="r1", sweep="speed", executor="inline")
    recorder = RowRecorder(store, meta, flush_every=8, flush_s=1e9)
    rows = [_measured_row(n) for n in range(10, 18)]
    rows[2]["iterations"] = 2**70   # beyond the int64 column
    for row in rows:
        recorder.add(row)
    recorder.close()
    stored = store.read(SWEEPS).set_index("N")
    assert len(stored) == 8 and recorder.counts == {"ok": 7, "error": 1}
    assert (stored.drop(12)["status"] == "ok").all() and stored.loc[12, "status"] == "error"
    assert stored.loc[12, "error"].startswith("measured, but the row could not be stored: ")
    assert "it was ok" in stored.loc[12, "error"] and stored.loc[12, "run_id"] == "r1"


def _measured_row(N: int) -> dict:
    from kpbench.bench.measure import base_row
    from kpbench.bench.plan import expand

    (point,) = expand(SweepSpec(backends=["numpy"], N=[N]))
    return {**base_row(point, "speed"), "status": "ok", "time_median_s": 0.01, "iterations": 1}


def test_the_issue_sweep_up_to_1e9_keeps_every_measured_row(tmp_path):
    """`--N 1e2..1e9:3 --backends torch`: the dense estimate at 1e9 passes int64; the
    measured N=100 row and the refused ones are all stored."""
    spec, measured = sweep_from_dict({"backends": "torch", "N": "1e2..1e9:3", "repeats": 1, "warmup": 0})
    result = run_sweep(spec, Settings(**measured, executor="inline", out=str(tmp_path), progress=False))
    rows = ResultStore(tmp_path).read(SWEEPS).set_index("N")
    assert result.counts == {"ok": 1, "skipped": 2} and sorted(rows.index) == [100, 316228, 10**9]
    assert rows.loc[10**9, "mem_estimate_bytes"] != rows.loc[10**9, "mem_estimate_bytes"]   # null
    assert "bytes), over the memory budget" in rows.loc[10**9, "error"]
