"""backend="auto": the rule on calibration tables, get_backend("auto", ...), the regret
table of the report, and `kpbench calibrate` on a real small sweep."""
from __future__ import annotations

import json
import logging
import math

import pytest

from kpbench.backends import auto, get_backend
from kpbench.errors import KPBenchError
from kpbench.results import regret
from kpbench.results.selection import load_sweeps
from test_report import run_cli, sweep_row, write_sweeps


def point(op, n, times, failed=None, dtype="float32", device="cpu", D=3):
    return {"op": op, "N": n, "M": n, "D": D, "dtype": dtype, "device": device,
            "times": times, "failed": failed or {}}


# torch: 1 ms at N=100 growing as N^2; keops: flat 10 ms then N^2 from 1e3 -> crossover near N=1e3
TABLE = {"version": auto.TABLE_VERSION, "points": [
    point("kernel_product", 100, {"torch": 1e-3, "keops": 1e-2}),
    point("kernel_product", 1000, {"torch": 1e-1, "keops": 1e-2}),
    point("kernel_product", 10000, {"keops": 1.0}, failed={"torch": "skipped"}),
    point("softmin", 100, {"torch": 2e-3, "keops": 1e-3}),
]}


@pytest.mark.parametrize("op, n, expected", [
    ("kernel_product", 100, "torch"), ("kernel_product", 2000, "keops"),
    ("kernel_product", 20000, "keops"),          # beyond torch's refusal: torch is out
    ("kernel_product", 300, "torch"),            # log-log: torch 1e-2 vs keops 1e-2 ... torch 9e-3
    ("mmd", 100, "torch"), ("sinkhorn", 100, "keops"),   # losses use their primitive's entries
    ("kernel_product_grad", 2000, "keops"),
])
def test_the_rule_picks_the_fastest_calibrated_backend(op, n, expected):
    choice = auto.choose(op, n, table=TABLE, candidates=["torch", "keops"])
    assert choice.backend == expected, choice.reason
    assert choice.calibrated and choice.reason.startswith("calibrated: " + expected)


def test_interpolation_is_log_log_between_calibration_sizes():
    est = auto.choose("kernel_product", 316, table=TABLE, candidates=["torch", "keops"]).estimates
    assert est["torch"] == pytest.approx(1e-3 * (316 / 100) ** 2, rel=1e-3)
    assert est["keops"] == pytest.approx(1e-2)
    assert math.isinf(auto.choose("kernel_product", 10000, table=TABLE,
                                  candidates=["torch", "keops"]).estimates["torch"])


def test_without_a_table_the_default_rule_applies():
    small = auto.choose("kernel_product", 1000, table={}, candidates=["torch", "keops"])
    large = auto.choose("kernel_product", 5000, table={}, candidates=["torch", "keops"])
    assert (small.backend, large.backend) == ("torch", "keops") and not small.calibrated
    assert small.reason.startswith("default rule (no calibration table)")
    only_torch = auto.choose("kernel_product", 5000, table={}, candidates=["torch"])
    assert only_torch.backend == "torch"
    cuda = auto.choose("kernel_product", 100, device="cuda", table=TABLE, candidates=["torch"])
    assert cuda.reason.startswith("default rule (no calibrated entry)")


def test_get_backend_auto_reads_the_table_and_says_what_it_picked(tmp_path, monkeypatch, caplog):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**TABLE, "points": [
        point("kernel_product", 100, {"torch": 1e-6, "keops": 1.0})]}))
    monkeypatch.setenv("KPBENCH_CALIBRATION", str(path))
    assert auto.table_path() == path
    with caplog.at_level(logging.INFO, logger="kpbench.auto"):
        backend = get_backend("auto", op="kernel_product", N=100, M=100, D=3, dtype="float32", device="cpu")
    assert backend.name == "torch" and auto.last_choice.backend == "torch"
    assert "backend='auto' picked torch for kernel_product N=100" in caplog.text
    import numpy as np
    import torch

    # as a loss would call it: sizes from shapes, the tensors' dtype and device
    backend = get_backend("auto", op="mmd", N=np.int64(100), M=100, D=3, dtype=torch.float32,
                          device=torch.device("cpu"))
    assert backend.name == "torch" and auto.last_choice.calibrated


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs the problem"), ({"op": "kernel_product", "N": 0}, "N must be a positive integer"),
    ({"op": "kernel_product", "N": 100, "dtype": "float16"}, "no backend available"),
])
def test_bad_problems_are_clear_errors(kwargs, message, monkeypatch, tmp_path):
    monkeypatch.setenv("KPBENCH_CALIBRATION", str(tmp_path / "none.json"))
    with pytest.raises(KPBenchError, match=message):
        get_backend("auto", **kwargs)


def test_an_unreadable_table_is_a_clear_error(tmp_path):
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(KPBenchError, match="rerun `kpbench calibrate`"):
        auto.load_table(tmp_path / "t.json")


def test_regret_on_seen_and_unseen_points(tmp_path):
    rows = [sweep_row(backend=b, N=n, time=t, blur=0.05) for b, n, t in [
        ("torch", 100, 1e-3), ("keops", 100, 2e-3),      # seen: auto picks torch, the best
        ("torch", 1000, 1e-1), ("keops", 1000, 2e-2),    # seen: keops, the best
        ("torch", 300, 5e-3), ("keops", 300, 4e-3),      # unseen: auto picks torch (9e-3 vs 1e-2 estimated)
        ("numpy", 300, 1e-4, )]]                          # not a candidate: ignored
    write_sweeps(tmp_path, rows)
    records = regret.regret_records(load_sweeps(tmp_path), TABLE)
    by_n = {r["N"]: r for r in records}
    assert sorted(by_n) == [100, 300, 1000]
    assert by_n[100]["seen"] == "calibration points" and by_n[100]["regret"] == 1.0
    assert by_n[300]["seen"] == "unseen points" and by_n[300]["pick"] == "torch"
    assert by_n[300]["regret"] == pytest.approx(5e-3 / 4e-3)
    summary = regret.regret_summary(records)
    assert summary == [["calibration points", "2", "1.000x", "1.000x", "100%"],
                       ["unseen points", "1", "1.250x", "1.250x", "0%"]]


@pytest.mark.slow
def test_calibrate_then_report_shows_the_regret(tmp_path, capsys):
    """A real calibration (torch, and KeOps when it is available here) and an unseen size."""
    from kpbench.results.report import write_report
    from kpbench.bench import calibrate
    from kpbench.cli import sweep as sweep_cli
    import kpbench.cli.main as cli

    out, table = tmp_path / "results", tmp_path / "calibration.json"
    code = cli.main(["calibrate", "--out", str(out), "--table", str(table), "--N", "100,400",
                     "--ops", "kernel_product", "--repeats", "3"])
    assert code == 0
    written = auto.load_table(table)
    assert written == json.loads((out / calibrate.STORE_COPY).read_text())
    assert {p["N"] for p in written["points"]} == {100, 400}
    assert all(p["times"].get("torch", 0) > 0 for p in written["points"])
    assert f"calibration table: {table}" in capsys.readouterr().out
    backends = sorted(written["points"][0]["times"])
    assert run_cli(sweep_cli, ["sweep", "speed", "--ops", "kernel_product", "--backends", ",".join(backends),
                               "--N", "200", "--blur", "0.1", "--repeats", "3", "--executor", "inline",
                               "--out", str(out), "--no-progress"]) == 0
    md = (write_report(out, interactive=False).parent / "report.md").read_text()
    assert '## backend="auto"' in md
    if len(backends) > 1:      # regret needs two candidates timed at a point
        assert "| calibration points | 2 |" in md and "| unseen points | 1 |" in md


def test_calibrate_refuses_bad_input_clearly(tmp_path, capsys):
    import kpbench.cli.main as cli

    assert cli.main(["calibrate", "--out", str(tmp_path), "--ops", "nope", "--table", str(tmp_path / "t.json")]) == 2
    assert "kpbench calibrate: " in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
