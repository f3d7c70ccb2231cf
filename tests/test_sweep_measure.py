"""Measuring single points (in this process): statuses, speed, memory, accuracy."""
from __future__ import annotations

import pytest

from kpbench.backends import availability, get_backend
from kpbench.suite import workloads
from kpbench.suite.measure import MeasureSettings, exact_ot_w2, run_point
from kpbench.suite.spec import Point

QUICK = MeasureSettings(repeats=5, warmup=1)


def point(**fields) -> Point:
    base = dict(op="kernel_product", backend="torch", kernel="gaussian", N=200, M=200, D=3,
                blur=0.1, p=None, reach=None, dtype="float32", device="cpu", seed=0,
                iters=None, scaling=None)
    if fields.get("op", "").startswith("sinkhorn") or fields.get("op") == "softmin":
        base.update(kernel=fields.get("op").split("_")[0], p=2)
    return Point(**{**base, **fields})


def test_a_row_carries_its_point_key_and_host():
    pt = point()
    row = run_point(pt, "speed", QUICK)
    assert row["status"] == "ok", row.get("error")
    assert row["key"] == pt.key("speed") and row["N"] == 200 and row["host"]


@pytest.mark.parametrize("fields, reason", [
    (dict(backend="numpy", dtype="float32"), "does not support float32"),
    (dict(backend="numpy", dtype="float64", op="kernel_product_grad"), "no autograd"),
])
def test_unsupported_combinations(fields, reason):
    row = run_point(point(**fields), "speed", QUICK)
    assert row["status"] == "unsupported" and reason in row["error"]


def test_cuda_points_without_a_gpu_are_unsupported():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the point would run")
    row = run_point(point(device="cuda"), "speed", QUICK)
    assert row["status"] == "unsupported" and "no CUDA device" in row["error"]
    if not availability()["cuda"][0]:
        row = run_point(point(backend="cuda"), "speed", QUICK)
        assert row["status"] == "unsupported" and "unavailable" in row["error"]


def test_preflight_refusal_is_skipped_with_the_estimate():
    pt = point(N=1000, M=1000)
    row = run_point(pt, "speed", MeasureSettings(memory_budget=2**20))
    estimate = get_backend("torch").memory_estimate("kernel_product", 1000, 1000, 3, 4)
    assert row["status"] == "skipped"
    assert row["mem_estimate_bytes"] == estimate and str(estimate) in row["error"]
    assert "pre-flight" in row["error"] and row.get("time_median_s") is None


def test_the_backend_refusing_itself_is_skipped_too():
    # the pre-flight budget is huge, so the backend's own budget check is what refuses
    row = run_point(point(N=200_000, M=200_000), "speed", MeasureSettings(memory_budget=10**18))
    assert row["status"] == "skipped" and "memory budget" in row["error"]


def test_bad_input_is_an_error_with_type_and_message():
    row = run_point(point(blur=-1.0), "speed", QUICK)
    assert row["status"] == "error" and row["error"].startswith("KPBenchError: blur must be")


def test_speed_statistics():
    row = run_point(point(N=300, M=300), "speed", QUICK)
    assert row["status"] == "ok" and row["repeats"] == 5
    assert 0 < row["time_min_s"] <= row["time_median_s"] and row["time_iqr_s"] >= 0
    assert row["first_call_s"] > 0 and row["value"] > 0


def test_sinkhorn_speed_records_iterations():
    fixed = run_point(point(op="sinkhorn", iters=4), "speed", MeasureSettings(repeats=5, warmup=0))
    converged = run_point(point(op="sinkhorn", scaling=0.5), "speed", MeasureSettings(repeats=5, warmup=0))
    assert fixed["status"] == converged["status"] == "ok"
    assert fixed["iterations"] == 4 and converged["iterations"] > 4
    assert fixed["eps"] == pytest.approx(0.1**2)


def test_accuracy_against_the_float64_reference():
    f32 = run_point(point(N=500, M=500), "accuracy", QUICK)
    f64 = run_point(point(N=500, M=500, dtype="float64"), "accuracy", QUICK)
    assert 0 < f32["rel_err"] < 1e-4
    assert f64["rel_err"] < 1e-12
    grad = run_point(point(op="kernel_product_grad"), "accuracy", QUICK)
    assert grad["status"] == "ok" and 0 < grad["rel_err"] < 1e-3


def test_sinkhorn_accuracy_and_the_exact_ot_comparison():
    row = run_point(point(op="sinkhorn", N=300, M=300, blur=0.05, scaling=0.5), "accuracy", QUICK)
    # rel_err is against the converged reference: what eps-scaling at .5 leaves undone
    assert row["status"] == "ok" and 1e-4 < row["rel_err"] < 0.1
    data = workloads.make_data(point(op="sinkhorn", N=300, M=300))
    exact = exact_ot_w2(data.x, data.y)
    assert row["rel_err_exact"] == pytest.approx(abs(row["value"] - exact) / exact)
    assert row["rel_err_exact"] < 0.2   # S_eps -> W2^2/2 as blur -> 0
    big = run_point(point(op="sinkhorn", N=300, M=400, blur=0.05, scaling=0.5), "accuracy", QUICK)
    assert big["status"] == "ok" and big.get("rel_err_exact") is None   # N != M: no assignment


def test_exact_ot_of_a_permuted_copy_is_zero_and_of_a_shift_is_half_its_square():
    import numpy as np

    x = np.random.default_rng(0).random((50, 2))
    assert exact_ot_w2(x, x[::-1]) == pytest.approx(0, abs=1e-15)
    assert exact_ot_w2(x, x + [0.3, 0.4]) == pytest.approx(0.5**2 / 2)


def test_flow_step_value_is_the_loss_and_matches_numpy():
    row = run_point(point(op="flow_step", kernel="sinkhorn", p=2, blur=0.1, scaling=0.5),
                    "accuracy", QUICK)
    assert row["status"] == "ok", row.get("error")
    assert row["value"] > 0 and row["rel_err"] < 1e-3


def test_memory_dense_torch_holds_a_matrix_keops_does_not():
    n = 2000
    dense = run_point(point(N=n, M=n), "memory", QUICK)
    assert dense["status"] == "ok" and dense["mem_method"] == "rss_delta"
    assert n * n * 4 <= dense["peak_mem_bytes"] <= 2 * dense["mem_estimate_bytes"]
    lazy = run_point(point(N=n, M=n, backend="keops"), "memory", QUICK)
    assert lazy["status"] == "ok", lazy.get("error")
    assert lazy["peak_mem_bytes"] < n * n * 4 / 4 and lazy["mem_estimate_bytes"] is None


def test_ops_of_a_plugin_run_as_sweep_points(test_ops):
    row = run_point(point(op="_test_raise", kernel="test"), "speed", QUICK)
    assert row["status"] == "error" and row["error"] == "RuntimeError: test op raised on purpose"
