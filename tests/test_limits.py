"""The machine's limits (kpbench.bench.machine), the cost model (kpbench.bench.costs), the
device table (kpbench.devices) and the limit columns of speed rows."""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys

import pytest

from kpbench import devices
from kpbench.errors import KPBenchError
from kpbench.bench import costs, machine


@pytest.fixture(scope="module")
def limits_file(tmp_path_factory):
    """This machine's limits measured once (``kpbench calibrate --limits``), cached in a
    file of the test's own, which the sweeps of this module read."""
    from kpbench.cli.main import main

    path = tmp_path_factory.mktemp("limits") / "limits.json"
    before = os.environ.get("KPBENCH_LIMITS")
    os.environ["KPBENCH_LIMITS"] = str(path)
    try:
        assert main(["calibrate", "--limits"]) == 0
        yield path
    finally:
        if before is None:
            os.environ.pop("KPBENCH_LIMITS", None)
        else:
            os.environ["KPBENCH_LIMITS"] = before


def test_calibrate_limits_measures_and_caches(limits_file):
    limits = machine.load()
    assert limits is not None
    for threading in ("1", "all"):
        rates = limits["rates"][threading]
        assert set(rates) == set(machine.RATE_NAMES)
        # broad: a machine shared with other work measures far below its peak
        assert all(1e5 < rate < 1e14 for rate in rates.values()), rates


@pytest.mark.parametrize("damage, why", [
    (lambda t: t.update(host="elsewhere"), "not on this machine"),
    (lambda t: t.update(version=0), "version"),
    (lambda t: t["rates"]["1"].update(exp_float32="1e9"), "is not a rate"),
    (lambda t: t["rates"]["1"].update(exp_float32=True), "is not a rate"),
    (lambda t: t["rates"]["all"].update(copy=-1.0), "is not a rate"),
    (lambda t: t["rates"]["all"].update(copy=1e300), "is not a rate"),
    (lambda t: t["rates"]["1"].pop("read"), "must hold exactly"),
    (lambda t: t["rates"].pop("all"), "must hold exactly"),
    (lambda t: t.update(threads_all=0), "thread count"),
])
def test_a_damaged_cache_is_refused_and_measured_again(limits_file, tmp_path, monkeypatch, damage, why):
    table = json.loads(limits_file.read_text())
    damage(table)
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("KPBENCH_LIMITS", str(path))
    with pytest.raises(KPBenchError, match=why):
        machine.load()


def test_a_cache_that_is_not_json_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "limits.json"
    path.write_text('{"version": 1, "rates": NaN')
    monkeypatch.setenv("KPBENCH_LIMITS", str(path))
    with pytest.raises(KPBenchError, match="unreadable"):
        machine.load()
    path.write_text("[" * 100000)
    with pytest.raises(KPBenchError, match="unreadable|not a JSON object"):
        machine.load()


def test_cost_model_counts():
    # Gaussian KP, N = M = 1000, D = 3, float32: 2D + 1 operations and one exp per pair;
    # online traffic: x, y, b read, out written; dense adds the matrix written and read
    online = costs.kernel_cost("gaussian", 1000, 1000, 3, 4, grad=False, dense=False)
    assert (online.fma, online.exp, online.bytes) == (7e6, 1e6, (3000 + 3000 + 1000 + 1000) * 4)
    dense = costs.kernel_cost("gaussian", 1000, 1000, 3, 4, grad=False, dense=True)
    assert dense.bytes == online.bytes + 2 * 1e6 * 4
    # Sinkhorn: 4 softmins per iteration on 2NM + N^2 + M^2 pairs, plus the last step
    s = costs.sinkhorn_cost(2, 100, 200, 3, 4, iterations=9, grad=False, dense=False)
    pairs = 2 * 100 * 200 + 100**2 + 200**2
    assert s.fma == pairs * 8 * 10 and s.exp == (pairs + 600) * 10
    energy = costs.kernel_cost("energy", 10, 10, 3, 4, grad=False, dense=False)
    assert energy.exp == 0


def _row(**kw):
    row = dict(op="kernel_product", kernel="gaussian", N=1000, M=1000, D=3, p=None, dtype="float32",
               device="cpu", status="ok", time_median_s=0.01, threads=1, gpu=None, iterations=None)
    row.update(kw)
    return row


RATES = {"version": 1, "rates": {t: {**{n: 1e9 for n in machine.RATE_NAMES}, "copy": 1e10}
                                 for t in ("1", "all")}}


def test_limit_columns():
    cols = costs.limit_columns(_row(), RATES, dense=False)
    # 7e6 operations at 1e9/s bound it (1e6 exp: 1 ms; 32 kB at 10 GB/s)
    assert cols == {"limit_s": pytest.approx(7e-3), "limit_frac": pytest.approx(0.7),
                    "limit_source": "measured cpu"}
    gpu = costs.limit_columns(_row(device="cuda", gpu="NVIDIA H100 80GB HBM3"), None, dense=False)
    h100 = devices.DEVICES["H100"]
    assert gpu["limit_source"] == "device table H100"
    assert gpu["limit_s"] == pytest.approx(max(7e6 / h100.fma_per_s, 1e6 / h100.exp_per_s))
    # no limit: a failed row, a GPU the table lacks, Sinkhorn without its iteration count
    assert costs.limit_columns(_row(status="timeout", time_median_s=None), RATES, False) == {}
    assert costs.limit_columns(_row(device="cuda", gpu="NVIDIA H100 PCIe"), RATES, False) == {}
    assert costs.limit_columns(_row(op="sinkhorn", p=2, iterations=math.nan), RATES, False) == {}
    five = costs.limit_columns(_row(op="sinkhorn", p=2, iterations=5), RATES, False)["limit_s"]
    # a peer that does not report its iterations, at a fixed count: the count of the point
    assert costs.limit_columns(_row(op="sinkhorn", p=2, iterations=None, iters=5), RATES, False) \
        == costs.limit_columns(_row(op="sinkhorn", p=2, iterations=5), RATES, False)
    assert five > 0


def test_all_threads_never_below_one_thread():
    rates = {"rates": {"1": {n: 2e9 for n in machine.RATE_NAMES},
                       "all": {**{n: 4e9 for n in machine.RATE_NAMES}, "exp_float32": 1e7}}}
    two = costs.cpu_rates(rates, "float32", 2)
    assert (two.fma, two.exp) == (4e9, 2e9)      # the exp measured while the CPUs were busy
    assert costs.cpu_rates(rates, "float32", 1).fma == 2e9


def test_device_table_is_the_sass_predictors():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
    import cuda_sass as sass   # the offline SASS counter, a tool of scripts/

    h100 = devices.DEVICES["H100"]
    assert (sass.SMS, sass.CLOCK_HZ) == (h100.sms, h100.clock_hz)
    assert sass.RATES["fp32"] * 32 == h100.fp32_lanes and sass.RATES["mufu"] * 32 == h100.mufu_lanes
    assert {"H100", "H200", "A100", "L4"} <= set(devices.DEVICES)
    assert devices.find("NVIDIA H200").name == "H200"
    assert devices.find("NVIDIA A100-SXM4-80GB").name == "A100"
    assert devices.find("NVIDIA L4").name == "L4"
    assert devices.find("NVIDIA L40S") is None and devices.find(None) is None


def test_speed_rows_carry_the_limit_and_the_report_shows_it(limits_file, tmp_path):
    from kpbench.results import tables
    from kpbench.results.selection import load_sweeps
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.settings import Settings
    from kpbench.bench.sweep import run_sweep

    spec, measured = sweep_from_dict(dict(kind="speed", ops="kernel_product", backends="torch", N="200",
                               D="3", repeats="3", blur="0.1"), where="test")
    run_sweep(spec, Settings(**measured, executor="inline", out=str(tmp_path), threads=1, progress=False))
    frame = load_sweeps(str(tmp_path))
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["limit_source"] == "measured cpu"
    assert row["limit_frac"] == pytest.approx(row["limit_s"] / row["time_median_s"])
    # the cached rates of this machine (one thread, as the sweep ran) and the op's cost; the
    # fraction itself moves with what else the machine runs, so it is not pinned here
    expected = costs.limit_seconds(costs.op_cost(row.to_dict(), dense=True),
                                   costs.cpu_rates(machine.load(), "float32", 1))
    assert row["limit_s"] == pytest.approx(expected) and row["limit_frac"] > 0
    (_title, _header, rows), = tables.op_tables(frame, "kernel_product")
    assert any(r[1] == "% of the machine's limit" for r in rows)
