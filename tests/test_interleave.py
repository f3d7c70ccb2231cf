"""Interleaved sweeps: variants in worker processes of their own, samples in alternation."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import SLOWDOWN_PLUGIN
from kpbench.errors import KPBenchError
from kpbench.results import compare
from kpbench.bench.interleave import Variant, parse_variant
from kpbench.bench.plan import SweepSpec
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
