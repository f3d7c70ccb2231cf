"""FlashSinkhorn and OTT-JAX as peers: parity with our Sinkhorn on the same schedule, their
settings recorded, FlashSinkhorn's speed points refused where it is interpreted."""
import json

import pytest
import torch

from kpbench import losses
from kpbench.errors import UnsupportedCombination


def clouds(N=64, M=48, D=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, D, generator=g, dtype=dtype)
    return x, torch.rand(M, D, generator=g, dtype=dtype) * 0.8 + 0.1


def value_and_grad(backend, x, y, **params):
    x = x.clone().requires_grad_(True)
    value = losses.sinkhorn(x=x, y=y, p=2, backend=backend, **params)
    (grad,) = torch.autograd.grad(value, [x])
    return float(value), grad.double()


def relative(u, v) -> float:
    return float((u - v).norm() / v.norm())


def point(backend, op="sinkhorn", **changes):
    from kpbench.bench.plan import Point

    base = dict(op=op, backend=backend, kernel="sinkhorn", N=40, M=40, D=3, blur=0.1, p=2,
                reach=None, dtype="float32", device="cpu", seed=0, iters=None, scaling=0.5)
    return Point(**{**base, **changes})


# -- FlashSinkhorn ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def flash():
    from kpbench.backends import availability

    ok, why = availability()["flash-sinkhorn-no-tf32"]
    if not ok:
        pytest.skip(why)
    from kpbench.peers.flash_sinkhorn import gpu_visible

    return gpu_visible()


def test_flash_sinkhorn_interpreted_matches_ours_on_the_same_schedule(flash):
    """TF32 off, N=64/48, blur .05, scaling .5, debiased: value and position gradient equal
    our float64 Sinkhorn on our schedule to float32 round-off (measured here, interpreted:
    value 2e-7..4e-7, gradient 1e-6..2e-6 relative); TF32 on moves the value by ~1e-5."""
    if flash:
        pytest.skip("a GPU is visible: the interpreted path is not used")
    x, y = clouds()
    ours, g_ours = value_and_grad("torch", x, y, blur=0.05, scaling=0.5)
    theirs, g_theirs = value_and_grad("flash-sinkhorn-no-tf32", x.float(), y.float(),
                                      blur=0.05, scaling=0.5)
    assert theirs == pytest.approx(ours, rel=5e-6)
    assert relative(g_theirs, g_ours) < 5e-5
    tf32 = float(losses.sinkhorn(x=x.float(), y=y.float(), blur=0.05, scaling=0.5,
                                 backend="flash-sinkhorn"))
    assert abs(tf32 - ours) > 10 * abs(theirs - ours)   # the TF32 setting is really applied


@pytest.mark.parametrize("params,reason", [
    (dict(p=1), "p=1"), (dict(tol=1e-6), "tolerance"), (dict(potentials=True), "potentials"),
    (dict(b=torch.full((48,), 0.5 / 48), reach=0.5), "weights b of total 0.5"),
])
def test_flash_sinkhorn_refuses_what_it_lacks(flash, params, reason):
    x, y = clouds(dtype=torch.float32)
    params = {"b": None, **params}
    with pytest.raises(UnsupportedCombination, match=reason):
        losses.sinkhorn(x=x, y=y, backend="flash-sinkhorn", **params)


def test_flash_sinkhorn_speed_points_refused_where_interpreted(flash):
    """Interpreted: a speed or memory point is `unsupported` (not retryable) with the
    reason, an accuracy point is run; float64 points are unsupported (it computes in fp32)."""
    if flash:
        pytest.skip("a GPU is visible: FlashSinkhorn is timed for real")
    from kpbench.bench.measure import run_point
    from kpbench.bench.settings import Settings

    for kind in ("speed", "memory"):
        row = run_point(point("flash-sinkhorn"), kind, Settings(repeats=1, warmup=0))
        assert row["status"] == "unsupported" and "interpreted: correctness only" in row["error"]
        assert not row.get("retryable")
    row = run_point(point("flash-sinkhorn", dtype="float64"), "accuracy", Settings())
    assert row["status"] == "unsupported" and "float64" in row["error"]


def test_flash_sinkhorn_settings_recorded(flash):
    from kpbench.backends import get_backend
    from kpbench.bench.measure.point import backend_settings

    on, off = (json.loads(backend_settings(get_backend(name)))
               for name in ("flash-sinkhorn", "flash-sinkhorn-no-tf32"))
    assert on["library"] == off["library"] == "flash-sinkhorn" and on["version"] == "0.4.1"
    assert (on["allow_tf32"], off["allow_tf32"]) == (True, False)
    assert "half_cost=True" in on["cost"] and "eps_list" in on["eps_mapping"]
    assert ("interpreter" in on["execution"]) is not flash


# -- OTT-JAX ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ott():
    pytest.importorskip("ott")
    from kpbench.backends import availability

    ok, why = availability()["ott"]
    if not ok:
        pytest.skip(why)


def test_ott_converged_matches_ours_to_round_off(ott):
    """float64, converged (tol 1e-12 on both sides, different stopping tests): value and
    gradient equal ours to round-off (measured: 2e-16 value). OTT's min_iterations would
    stop it at once as 'diverged' and say converged: the value would be off by ~1e-2."""
    x, y = clouds()
    ours, g_ours = value_and_grad("torch", x, y, blur=0.1, tol=1e-12, max_iter=5000)
    value, info = losses.sinkhorn(x=x, y=y, blur=0.1, tol=1e-12, max_iter=5000, backend="ott",
                                  return_info=True)
    assert float(value) == pytest.approx(ours, rel=1e-12)
    assert info.converged is True and info.iterations > len(info.eps_schedule)
    _, g_theirs = value_and_grad("ott", x, y, blur=0.1, tol=1e-12, max_iter=5000)
    assert relative(g_theirs, g_ours) < 1e-9


def test_ott_runs_our_schedule_and_fixed_counts(ott):
    """eps-scaling: as many iterations as our schedule (OTT's Epsilon reproduces it);
    iters=n: n iterations; online (batch_size) equals the dense PointCloud."""
    x, y = clouds()
    dense, info = losses.sinkhorn(x=x, y=y, blur=0.1, scaling=0.5, backend="ott",
                                  return_info=True)
    _, ours = losses.sinkhorn(x=x, y=y, blur=0.1, scaling=0.5, backend="torch",
                              return_info=True)
    assert info.iterations == len(ours.eps_schedule) and info.converged is None
    assert info.eps_schedule == ours.eps_schedule
    online = losses.sinkhorn(x=x, y=y, blur=0.1, scaling=0.5, backend="ott-online")
    assert float(online) == pytest.approx(float(dense), rel=1e-12)
    _, fixed = losses.sinkhorn(x=x, y=y, blur=0.1, iters=7, backend="ott", return_info=True)
    assert fixed.iterations == 7


def test_ott_settings_recorded_and_refusals(ott):
    from kpbench.backends import get_backend
    from kpbench.bench.measure.point import backend_settings

    settings = json.loads(backend_settings(get_backend("ott")))
    assert settings["library"] == "ott-jax" and settings["version"] == "0.6.0"
    assert settings["jax"].startswith("0.8.") and "scale_cost=2.0" in settings["cost"]
    assert json.loads(backend_settings(get_backend("ott-online")))["batch_size"]
    x, y = clouds()
    with pytest.raises(UnsupportedCombination, match="potentials"):
        losses.sinkhorn(x=x, y=y, potentials=True, backend="ott")
    with pytest.raises(UnsupportedCombination, match="unbalanced"):   # another quantity, see ott.py
        losses.sinkhorn(x=x, y=y, reach=0.5, backend="ott-online")
