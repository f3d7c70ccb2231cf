"""Interleaved sweeps: variants in worker processes of their own, samples in alternation."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import SLOWDOWN_PLUGIN
from kpbench.errors import KPBenchError
from kpbench.results import compare
from kpbench.bench.interleave import Variant, parse_variant
from kpbench.bench.plan import Point, SweepSpec
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep

SPEC = dict(kind="speed", ops=["kernel_product"], backends=["torch"], dtype=["float32"],
            blur=[0.1], N=[60, 90])


def interleaved(spec_values: dict, variants: list, out):
    """The interleaved sweep of ``spec_values`` (10 samples, one warm-up call) into OUT/<variant>."""
    return run_sweep(SweepSpec(**spec_values), Settings(out=str(out), progress=False, repeats=10, warmup=1),
                     variants=variants)


def rows_of(out, name):
    return pd.read_parquet(out / name / "sweeps").sort_values("N").to_dict("records")


def test_parse_variant(tmp_path):
    assert parse_variant("base") == Variant("base")
    v = parse_variant(f"old={tmp_path}:KPBENCH_SLOWDOWN=torch=1.3,OMP_PROC_BIND=true")
    assert v.path == str(tmp_path) and v.env == {"KPBENCH_SLOWDOWN": "torch=1.3", "OMP_PROC_BIND": "true"}
    assert parse_variant("x=:A=1").env == {"A": "1"} and parse_variant("x=:A=1").path is None
    for bad, message in [("a b", "must be a word"), (f"x={tmp_path / 'nope'}", "is not a folder"),
                         ("x=:A", "is not VAR=VALUE")]:
        with pytest.raises(KPBenchError, match=message):
            parse_variant(bad)


def test_variants_share_sessions_rounds_and_calls_per_sample(tmp_path):
    slowed = Variant("slowed", env={"KPBENCH_PLUGINS": SLOWDOWN_PLUGIN, "KPBENCH_SLOWDOWN": "torch=3"})
    result = interleaved(SPEC, [Variant("base"), slowed], tmp_path)
    assert result.counts == {"base": {"ok": 2}, "slowed": {"ok": 2}}, result.summary()
    base, slow = rows_of(tmp_path, "base"), rows_of(tmp_path, "slowed")
    for b, s in zip(base, slow):
        assert b["key"] == s["key"] and b["interleave_id"] == s["interleave_id"]
        assert b["interleave_variants"] == "base,slowed" and b["executor"] == "interleaved"
        assert len(b["time_samples_s"]) == len(s["time_samples_s"]) == 10
        assert b["number"] == s["number"]          # one number of calls for the session
        assert compare.paired_samples(b, s) is not None
    assert base[0]["interleave_id"] != base[1]["interleave_id"]
    # 3x slower by construction: far beyond any drift, so the paired verdict is certain
    point = compare.compare_point(base[0], slow[0])
    assert point.regressed == ["time"] and point.ratios["time"] > 2, point
    # a second run resumes: nothing left to measure
    again = interleaved(SPEC, [Variant("base"), slowed], tmp_path)
    assert again.already_stored == 2 and again.counts == {"base": {}, "slowed": {}}


def test_a_failing_variant_is_recorded_and_the_others_go_on(tmp_path):
    broken = Variant("broken", env={"KPBENCH_PLUGINS": str(tmp_path / "missing.py")})
    missing_python = Variant("nopython", python=str(tmp_path / "no-python"))
    result = interleaved({**SPEC, "N": [60]}, [Variant("base"), broken, missing_python], tmp_path)
    assert result.counts["base"] == {"ok": 1}
    [row] = rows_of(tmp_path, "broken")
    assert row["status"] == "error" and "worker exited" in row["error"] and row["retryable"]
    [row] = rows_of(tmp_path, "nopython")
    assert row["status"] == "error" and "no-python" in row["error"]


@pytest.mark.parametrize("kind, variants, message", [
    ("accuracy", ["a", "b"], "speed only"),
    ("speed", ["a"], "two or more variants"),
    ("speed", ["a", "a"], "distinct names"),
])
def test_bad_interleaved_sweeps_are_refused(tmp_path, kind, variants, message):
    with pytest.raises(KPBenchError, match=message):
        interleaved({**SPEC, "kind": kind}, [Variant(v) for v in variants], tmp_path)


def test_the_sweep_command_interleaves_and_compare_pairs(tmp_path, capsys):
    from kpbench.cli import compare as compare_cli
    from kpbench.cli import sweep as sweep_cli
    from test_report import run_cli

    out = tmp_path / "ab"
    args = ["sweep", "speed", "--ops", "kernel_product", "--backends", "torch", "--N", "60",
            "--repeats", "12", "--out", str(out), "--no-progress", "--interleave", "main",
            "--interleave", f"mine=:KPBENCH_PLUGINS={SLOWDOWN_PLUGIN},KPBENCH_SLOWDOWN=torch=3"]
    assert run_cli(sweep_cli, args) == 0
    assert "interleaved sweep speed: 1 points x 2 variants" in capsys.readouterr().out
    assert run_cli(compare_cli, ["compare", str(out / "main"), str(out / "mine"), "--no-page"]) == 1
    assert "paired over 12 interleaved rounds" in capsys.readouterr().out


@pytest.mark.parametrize("layout, says", [
    ("bench", "today's worker"), ("suite", "a worker from before the rebuild"), (None, None)])
def test_a_variants_worker_is_found_in_its_own_layout(tmp_path, layout, says):
    """A variant's worker is its own checkout's, even when the sweep runs inside another
    checkout (this test runs in the repository's root, first on a -c process's path); one
    from before the sweep engine's rebuild keeps it in kpbench.suite.interleave."""
    import pathlib
    import subprocess
    import sys

    from kpbench.bench.interleave import WORKER_LAUNCH, WORKER_MODULES

    package = tmp_path / "kpbench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if layout:
        (package / layout).mkdir()
        (package / layout / "__init__.py").write_text("")
        (package / layout / "interleave.py").write_text(
            f"import sys\nif __name__ == '__main__':\n    print({says!r}, sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", WORKER_LAUNCH, str(tmp_path), *WORKER_MODULES],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
    if layout:
        assert done.returncode == 0 and done.stdout.strip() == f"{says} ['--worker']", done.stderr
    else:
        assert done.returncode != 0 and "has no interleave worker" in done.stderr


def test_a_worker_from_before_the_later_columns_is_sent_only_fields_it_knows():
    """A variant checkout from 53cad00 (the store format this project promises to read)
    builds its Point from exactly these fields; a moved or sourced point needs a newer one."""
    from kpbench.bench.plan import legacy_fields

    fields_at_53cad00 = {"op", "backend", "kernel", "N", "M", "D", "blur", "p", "reach", "dtype",
                         "device", "seed", "iters", "scaling", "tol"}
    common = dict(N=10, M=10, D=2, blur=0.1, p=2, reach=None, dtype="float64", device="cpu",
                  seed=0, iters=None, scaling=0.5)
    flow = legacy_fields(Point(op="flow_step", backend="torch", kernel=None, loss="mmd", **common))
    assert set(flow) <= fields_at_53cad00 and flow["kernel"] == "mmd"
    plain = legacy_fields(Point(op="sinkhorn", backend="torch", kernel=None, **common))
    assert set(plain) <= fields_at_53cad00
    moved = legacy_fields(Point(op="sinkhorn", backend="torch", kernel=None, offset=100.0, **common))
    assert moved["offset"] == 100.0


def test_a_variants_rows_name_the_commit_of_its_own_checkout(tmp_path):
    """Interleaved rows of a variant with a PATH carry that checkout's commit, not the
    driver's (both sides read the driver's before: a comparison could not say what ran)."""
    import subprocess

    from kpbench.bench.interleave import Variant
    from kpbench.bench.sweep import _open_run
    from kpbench.results.meta import git_commit, load_environment
    from kpbench.results.store import ResultStore

    checkout = tmp_path / "other"
    (checkout / "kpbench").mkdir(parents=True)
    (checkout / "kpbench" / "__init__.py").write_text("")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "other"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    variant = Variant("other", str(checkout))
    stores = {"other": ResultStore(tmp_path / "out" / "other"), "here": ResultStore(tmp_path / "out" / "here")}
    run_id, recorders = _open_run(stores, "speed", Settings(), None, "interleaved",
                                  {"other": variant.path, "here": None})
    assert recorders["other"].meta["git_commit"] == head
    assert recorders["here"].meta["git_commit"] == git_commit() != head
    assert load_environment(tmp_path / "out" / "other", run_id)["git_commit"] == head
    assert load_environment(tmp_path / "out" / "here", run_id)["git_commit"] == git_commit()
