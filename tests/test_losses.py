"""The losses: agreement across backends, the mathematics' limits, gradients, known pitfalls."""
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from kpbench import losses

BACKENDS = ["torch", "keops"]


def cloud_pair(N=60, M=50, D=2, seed=0, shift=0.3):
    rng = np.random.default_rng(seed)
    return rng.random((N, D)), rng.random((M, D)) * 0.8 + shift


def t64(*arrays, grad=False):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=grad) for a in arrays]


CONVERGED = dict(tol=1e-10, max_iter=5000)   # Sinkhorn compared with the converged reference
LOSS_CASES = [
    ("mmd", dict(kernel="gaussian", blur=0.2)),
    ("mmd", dict(kernel="laplacian", blur=0.2)),
    ("energy", {}),
    ("hausdorff", dict(p=2, blur=0.1)),
    ("log_likelihood", dict(blur=0.25)),
    ("sinkhorn", dict(p=2, blur=0.1, **CONVERGED)),
    ("sinkhorn", dict(p=1, blur=0.1, **CONVERGED)),
    ("sinkhorn", dict(p=2, blur=0.1, reach=0.3, **CONVERGED)),
    ("sinkhorn", dict(p=2, blur=0.1, debias=False, **CONVERGED)),
    ("sinkhorn_multiplicative", dict(p=2, blur=0.3, iters=50)),
]


def tolerance(dtype) -> float:
    """What the arithmetic allows on these unit-square clouds (measured errors ~4x below).

    float64: 1e-8 (dense torch measured <= 3e-15 since it takes the laplacian/energy/p=1
    distances from differences; the square root of the expanded squares was <= 4e-9 off).
    float32: 2e-6 (dense torch <= 4.5e-7, was 1e-4 with that square root; KeOps <= 6e-7).
    """
    return 1e-8 if dtype == torch.float64 else 2e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,params", LOSS_CASES)
def test_losses_match_reference(backend, name, params):
    x, y = cloud_pair()
    loss = losses.make_loss(name, **params)
    ref = loss(None, x, None, y, backend="numpy")
    for dtype in (torch.float64, torch.float32):
        if "tol" in params and dtype == torch.float32:   # 1e-10 is below float32's resolution
            # unbalanced updates contract more slowly (damping): a smaller change is needed
            # for the same accuracy (tol 1e-6 leaves 8.6e-6 relative there, 1e-8 3e-7)
            loss = losses.make_loss(name, **{**params, "tol": 1e-8 if "reach" in params else 1e-6})
        value = loss(None, torch.tensor(x, dtype=dtype), None, torch.tensor(y, dtype=dtype),
                     backend=backend)
        assert value.dtype == dtype
        tol = tolerance(dtype)
        assert abs(float(value) - ref) <= tol * abs(ref), (dtype, float(value), ref)


def test_eps_scaling_alone_is_measured_against_the_converged_truth():
    """The reference solves to convergence whatever ``scaling`` says: a fast eps-scaling
    run (scaling .5, no tol) is off by its algorithmic error, which a reference sharing
    its algorithm would hide (it would agree to round-off)."""
    x, y = cloud_pair()
    truth = losses.sinkhorn(x=x, y=y, blur=0.05, backend="numpy")
    fast = float(losses.sinkhorn(x=torch.tensor(x), y=torch.tensor(y), blur=0.05, scaling=0.5))
    assert 1e-4 < abs(fast - truth) / truth < 0.1


def test_reference_primal_and_dual_agree_and_it_converges():
    x, y = cloud_pair()
    for params in (dict(p=2, blur=0.05), dict(p=1, blur=0.05), dict(p=2, blur=0.1, reach=0.3),
                   dict(p=2, blur=0.1, reach=0.3, debias=False)):
        value, info = losses.sinkhorn(x=x, y=y, backend="numpy", return_info=True, **params)
        assert info.converged and info.marginal_err <= 1e-12, (params, info)
        assert info.primal == pytest.approx(info.value, rel=1e-9, abs=1e-13), (params, info)


# -- the reference refuses what it cannot compute, and says when it did not converge ------
@pytest.mark.parametrize("scale,why", [(1e8, "below float64's resolution"),
                                       (1e10, "below float64's resolution"),
                                       (1e200, "overflows float64")])
def test_reference_refuses_coordinates_it_cannot_compute(scale, why):
    """Coordinates x1e8 / x1e10 (blur .05): eps is below the rounding of the costs (it read
    "converged" with a dual of 3e14 beside a primal of 2e30, then S = -inf); x1e200: the
    costs overflow (the annealing never ended). A clear error, within seconds."""
    from kpbench.errors import KPBenchError

    x, y = cloud_pair()
    started = time.monotonic()
    with pytest.raises(KPBenchError, match=why):
        losses.sinkhorn(x=x * scale, y=y * scale, blur=0.05, backend="numpy")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("option,value,why", [("blur", 1e-200, "blur=1e-200 with p=2"),
                                              ("reach", 1e300, "reach=1e\\+300 with p=2")])
def test_reference_refuses_eps_or_rho_outside_float64(option, value, why):
    from kpbench.errors import KPBenchError
    from kpbench.reference.sinkhorn import np_sinkhorn

    x, y = cloud_pair(6, 5)
    a, b = np.full(6, 1 / 6), np.full(5, 1 / 5)
    params = {"p": 2, "blur": 0.1, option: value}
    with pytest.raises(KPBenchError, match=why):
        np_sinkhorn(a, x, b, y, **params)


def test_reference_convergence_needs_the_primal_dual_gap_closed(monkeypatch):
    """With a gap tolerance no computation meets (negative), the residual alone (below tol
    here) does not make a solve converged: it runs to max_iter and says so."""
    from kpbench.reference import sinkhorn as reference

    x, y = cloud_pair()
    monkeypatch.setattr(reference, "GAP_TOLERANCE", -1.0)
    _, info = losses.sinkhorn(x=x, y=y, blur=0.1, backend="numpy", return_info=True,
                              max_iter=300)
    assert info.marginal_err <= 1e-12 and info.primal != info.value
    assert not info.converged and info.iterations == 300


def test_reference_is_bounded_in_time_and_annealing_levels(monkeypatch):
    """x1e3 at blur .05: eps is 2e-9 of the largest cost, the residual stalls at ~2e-9 and
    the solve would run its 100000 iterations; within MAX_SECONDS it stops, not converged.
    The warm start's eps schedule has at most MAX_ANNEALING_LEVELS levels."""
    from kpbench.reference import sinkhorn as reference

    assert len(reference._annealing(1e300, 1e-300)) == reference.MAX_ANNEALING_LEVELS
    monkeypatch.setattr(reference, "MAX_SECONDS", 0.2)
    x, y = cloud_pair()
    started = time.monotonic()
    _, info = losses.sinkhorn(x=x * 1e3, y=y * 1e3, blur=0.05, backend="numpy",
                              return_info=True)
    assert time.monotonic() - started < 5
    assert not info.converged and info.iterations < 100_000


@pytest.mark.parametrize("backend,exact", [("numpy", 1e-9), ("torch", 1e-12)])
def test_sinkhorn_divergence_properties(backend, exact):
    """S(a, b) > 0, symmetric, S(a, a) = 0: to round-off on torch (the same routine computes
    all three terms), to the reference's convergence tolerance on numpy (its cross and self
    problems are solved by different iterations, each to a residual of 1e-12)."""
    for seed in range(3):
        x, y = cloud_pair(40, 30, D=3, seed=seed)
        s_xy = float(losses.sinkhorn(x=x, y=y, blur=0.05, backend=backend))
        s_yx = float(losses.sinkhorn(x=y, y=x, blur=0.05, backend=backend))
        assert s_xy > 0
        assert s_xy == pytest.approx(s_yx, rel=1e-6)
        assert abs(float(losses.sinkhorn(x=x, y=x, blur=0.05, backend=backend))) < exact


def test_sinkhorn_stays_nonnegative_with_aggressive_scaling():
    # Nearly identical clouds, few annealing steps: a known source of negative values.
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = rng.random((50, 2))
        y = x + rng.normal(0, 0.01, x.shape)
        for scaling in (0.1, 0.3):
            assert float(losses.sinkhorn(x=x, y=y, blur=0.01, scaling=scaling, backend="torch")) >= 0


def exact_w2_half(x, y) -> float:
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def test_small_blur_approaches_exact_optimal_transport():
    """S_eps -> W2^2/2 as blur -> 0 (N = M uniform: the exact OT is an assignment).

    Debiasing removes the first-order entropic bias; what is left for N=80 points at
    typical spacing ~0.1 is measured at ~2e-3 (blur .02) and ~2e-4 (blur .01) once the
    potentials have converged (tol). The bound 2e-3 at blur .01 leaves a 10x margin and
    still fails if the limit were wrong; the error must also shrink with the blur.
    """
    x, y = cloud_pair(80, 80, D=2, seed=0)
    exact = exact_w2_half(x, y)
    errors = []
    for blur in (0.05, 0.02, 0.01):
        s = losses.sinkhorn(x=x, y=y, p=2, blur=blur, scaling=0.9, tol=1e-9, max_iter=3000,
                            backend="numpy")
        errors.append(abs(s - exact) / exact)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_large_blur_approaches_energy_distance():
    """p=1, blur -> inf: the plan tends to a x b and S_eps to 1/2 |a - b|^2 for k = -|x - y|.
    The deviation decays like diameter/blur: measured 6.5e-3 at blur 10, 6.5e-4 at 100."""
    x, y = cloud_pair(60, 45, D=2, seed=3, shift=0.5)
    energy = losses.energy_distance(x=x, y=y, backend="numpy")
    errors = [abs(losses.sinkhorn(x=x, y=y, p=1, blur=blur, backend="numpy") - energy) / energy
              for blur in (10.0, 100.0, 1000.0)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_dual_value_equals_primal_cost_at_small_blur():
    """OT_eps from the dual potentials equals <pi, C> + eps KL(pi | a x b) of the plan they
    define, once converged (blur .05 ~ a third of the point spacing: ~800 iterations)."""
    x, y = cloud_pair(40, 40, D=2, seed=4)
    blur, eps = 0.05, 0.05**2
    a = b = np.full(40, 1 / 40)
    options = dict(x=x, y=y, blur=blur, debias=False, tol=1e-11, max_iter=5000, backend="numpy")
    f, g = losses.sinkhorn(potentials=True, **options)
    dual = losses.sinkhorn(**options)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1) / 2
    plan = a[:, None] * b[None] * np.exp((f[:, None] + g[None] - cost) / eps)
    assert plan.sum(1) == pytest.approx(a, rel=1e-6)
    assert plan.sum(0) == pytest.approx(b, rel=1e-6)
    primal = (plan * cost).sum() + eps * (plan * np.log(plan / (a[:, None] * b[None]))).sum()
    assert dual == pytest.approx(primal, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,params", [
    ("mmd", dict(kernel="gaussian", blur=0.3)),
    ("energy", {}),
    ("hausdorff", dict(p=2, blur=0.2)),
    ("sinkhorn", dict(p=2, blur=0.1, tol=1e-12, max_iter=2000)),
    ("sinkhorn", dict(p=1, blur=0.1, tol=1e-12, max_iter=2000)),
    ("sinkhorn", dict(p=2, blur=0.1, reach=0.5, tol=1e-12, max_iter=2000)),
])
def test_position_gradients_match_finite_differences(backend, name, params):
    x, y = cloud_pair(25, 20, D=2, seed=5)
    loss = losses.make_loss(name, **params)
    xt, yt = t64(x, y, grad=True)
    gx, gy = torch.autograd.grad(loss(None, xt, None, yt, backend=backend), [xt, yt])
    rng = np.random.default_rng(0)
    step = 1e-5
    for grad, which in ((gx, 0), (gy, 1)):
        direction = rng.normal(size=(x, y)[which].shape)
        plus, minus = [c.copy() for c in (x, y)], [c.copy() for c in (x, y)]
        plus[which] += step * direction
        minus[which] -= step * direction
        fd = (loss(None, plus[0], None, plus[1], backend="numpy")
              - loss(None, minus[0], None, minus[1], backend="numpy")) / (2 * step)
        assert float((grad.numpy() * direction).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_gradients_match_finite_differences(backend):
    x, y = cloud_pair(25, 20, D=2, seed=6)
    a = np.full(25, 1 / 25)
    b = np.full(20, 1 / 20)
    at, xt, bt, yt = t64(a, x, b, y)
    at.requires_grad_(True)
    loss = losses.make_loss("sinkhorn", p=2, blur=0.1, tol=1e-12, max_iter=2000)
    (ga,) = torch.autograd.grad(loss(at, xt, bt, yt, backend=backend), [at])
    direction = np.zeros(25)
    direction[[0, 7]] = (1.0, -1.0)  # keeps the total mass: balanced OT needs equal masses
    step = 1e-6
    fd = (loss(a + step * direction, x, b, y, backend="numpy")
          - loss(a - step * direction, x, b, y, backend="numpy")) / (2 * step)
    assert float((ga.numpy() * direction).sum()) == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,params", [("energy", {}), ("sinkhorn", dict(p=1, blur=0.1)),
                                         ("mmd", dict(kernel="laplacian", blur=0.1))])
def test_no_nan_gradient_when_points_coincide(backend, name, params):
    # |x - y| is not differentiable at 0; a naive sqrt gives 0 * inf = NaN there.
    x, _ = cloud_pair(20, 20, seed=7)
    xt = torch.tensor(x, requires_grad=True)
    value = losses.make_loss(name, **params)(None, xt, None, torch.tensor(x), backend=backend)
    (grad,) = torch.autograd.grad(value, [xt])
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", ["numpy", "torch", "keops"])
def test_single_point_and_identical_points_do_not_crash(backend):
    # The diameter of a cloud of identical points is 0: the eps schedule must not take log(0).
    one = np.array([[0.5, 0.5]])
    same = np.repeat(one, 5, axis=0)
    for x, y in [(one, one), (same, same), (one, same)]:
        value = float(losses.sinkhorn(x=x, y=y, blur=0.05, backend=backend))
        assert value == pytest.approx(0.0, abs=1e-12)
    value = float(losses.sinkhorn(x=one, y=one + 0.1, blur=0.01, backend=backend))
    assert value == pytest.approx(0.01, rel=1e-3)  # |0.1 sqrt 2|^2 / 2


def test_float64_runs_in_float64_on_every_path():
    x, y = cloud_pair()
    for backend in BACKENDS:
        xt, yt = t64(x, y)
        for name, params in LOSS_CASES:
            assert losses.make_loss(name, **params)(None, xt, None, yt, backend=backend).dtype == torch.float64


def test_multiplicative_sinkhorn_underflows_to_nan_in_float32_where_log_domain_does_not():
    x, y = cloud_pair(50, 50, D=2, seed=8, shift=2.5)  # clouds ~2.5 apart: exp(-C/eps) = 0 in float32
    xt, yt = (torch.tensor(v, dtype=torch.float32) for v in (x, y))
    assert torch.isnan(losses.sinkhorn_multiplicative(x=xt, y=yt, blur=0.15, iters=10))
    assert torch.isfinite(losses.sinkhorn(x=xt, y=yt, blur=0.15))


def gauge_fixed(f, g, a, b):
    """Balanced potentials are defined up to (f + c, g - c): shift so that <a, f> = <b, g>."""
    shift = (a @ f - b @ g) / (2 * a.sum())
    return f - shift, g + shift


def test_potentials_and_info():
    x, y = cloud_pair()
    (f, g), info = losses.sinkhorn(x=torch.tensor(x), y=torch.tensor(y), potentials=True,
                                   return_info=True, **CONVERGED)
    assert f.shape == (60,) and g.shape == (50,)
    assert info.iterations > len(info.eps_schedule)
    a, b = np.full(60, 1 / 60), np.full(50, 1 / 50)
    f, g = gauge_fixed(f.numpy(), g.numpy(), a, b)
    ref_f, ref_g = losses.sinkhorn(x=x, y=y, potentials=True, backend="numpy")
    assert np.allclose(f, ref_f, atol=1e-8) and np.allclose(g, ref_g, atol=1e-8)


def test_fixed_iteration_count():
    x, y = cloud_pair()
    _, info = losses.sinkhorn(x=x, y=y, iters=7, return_info=True, backend="torch")
    assert info.iterations == 7 and info.eps_schedule == [0.05**2] * 7


def test_backend_auto_picks_one_for_the_problem_and_says_which():
    from kpbench.backends import auto

    x, y = cloud_pair()
    xt, yt = t64(x, y)
    value = losses.mmd(x=xt, y=yt, kernel="gaussian", blur=0.2, backend="auto")
    choice = auto.last_choice
    assert choice.backend in ("torch", "keops", "cuda") and choice.reason
    explicit = losses.mmd(x=xt, y=yt, kernel="gaussian", blur=0.2, backend=choice.backend)
    assert float(value) == pytest.approx(float(explicit), rel=1e-12)


# -- unbalanced Sinkhorn: value = dual objective, exact gradients -------------------------
UNBALANCED = dict(p=2, blur=0.1, reach=0.5, tol=1e-12, max_iter=2000)


def unequal_masses(seed=9):
    """Clouds of 25 and 20 points with masses 0.7 and 1.3 (non-uniform weights)."""
    rng = np.random.default_rng(seed)
    x, y = cloud_pair(25, 20, D=2, seed=seed)
    a, b = rng.random(25) + 0.5, rng.random(20) + 0.5
    return 0.7 * a / a.sum(), x, 1.3 * b / b.sum(), y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("debias", [True, False])
def test_unbalanced_value_equals_the_primal_with_unequal_masses(backend, debias):
    """The value is the dual objective at the converged potentials, which equals the primal
    (the reference's info.primal); GeomLoss's (rho + eps/2) formula is off by
    eps (m_a m_b - (m_a + m_b)/2) without debias (here 0.01 * -0.09 = 9e-4 absolute)."""
    a, x, b, y = unequal_masses()
    params = dict(UNBALANCED, debias=debias)
    _, info = losses.sinkhorn(a, x, b, y, backend="numpy", return_info=True, **params)
    value = float(losses.sinkhorn(*t64(a, x, b, y), backend=backend, **params))
    assert value == pytest.approx(info.primal, rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mass", [0.5, 2.0])
def test_balanced_raw_value_with_mass_m_is_the_primal_and_the_large_reach_limit(backend, mass):
    """debias=False with total masses m != 1: the dual of <pi, C> + eps KL(pi | a x b), as
    the reference's primal and the unbalanced value as reach -> inf (GeomLoss's <a, f> +
    <b, g> is eps (m^2 - m) below: 0.125237 vs 0.145237 at m = 2, blur .1, before)."""
    a, x, b, y = unequal_masses()
    a, b = mass * a / a.sum(), mass * b / b.sum()
    params = dict(p=2, blur=0.1, debias=False)
    _, info = losses.sinkhorn(a, x, b, y, backend="numpy", return_info=True, **params)
    value = float(losses.sinkhorn(*t64(a, x, b, y), backend=backend, tol=1e-12, max_iter=2000,
                                  **params))
    assert value == pytest.approx(info.primal, rel=1e-9)
    far = float(losses.sinkhorn(a, x, b, y, backend="numpy", reach=1e4, **params))
    assert value == pytest.approx(far, rel=1e-6)   # the unbalanced limit: O(eps / rho) away


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_unbalanced_value_holds_off_convergence(backend, seed):
    """eps-scaling without tol stops far from convergence at small blur; the value must
    still be a divergence near the converged one. Gaussian clouds, N=50, D=3, blur .01,
    reach .3: within 1 % of the converged reference (0.3 % and 0.7 % here); the dual
    objective with its coupling computed as such gave -1.4e13 and -4.1e17."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    params = dict(p=2, blur=0.01, reach=0.3)
    truth, info = losses.sinkhorn(x=x, y=y, backend="numpy", return_info=True, **params)
    xt, yt = t64(x, y)
    value = float(losses.sinkhorn(x=xt, y=yt, backend=backend, **params))
    assert info.converged
    assert value >= 0
    assert value == pytest.approx(truth, rel=0.01)


def central_difference(loss, arrays, which, direction, step):
    plus, minus = list(arrays), list(arrays)
    plus[which] = arrays[which] + step * direction
    minus[which] = arrays[which] - step * direction
    return (loss(*plus, backend="numpy") - loss(*minus, backend="numpy")) / (2 * step)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("debias", [True, False])
def test_unbalanced_gradients_match_finite_differences(backend, debias):
    """Weights (along a mass-preserving and a random direction) and positions, against
    central differences of the converged float64 reference. GeomLoss's weight gradient is
    (rho + eps/2)/(rho + eps) = 0.96 times the truth along mass-preserving directions here."""
    arrays = unequal_masses(seed=10)
    loss = losses.make_loss("sinkhorn", **dict(UNBALANCED, debias=debias))
    tensors = t64(*arrays, grad=True)
    grads = torch.autograd.grad(loss(*tensors, backend=backend), tensors)
    rng = np.random.default_rng(1)
    preserving = np.zeros(25)
    preserving[[3, 11]] = (1.0, -1.0)
    cases = [(0, preserving, 1e-6), (0, rng.normal(size=25), 1e-6), (2, rng.normal(size=20), 1e-6),
             (1, rng.normal(size=(25, 2)), 1e-5), (3, rng.normal(size=(20, 2)), 1e-5)]
    for which, direction, step in cases:
        fd = central_difference(loss, arrays, which, direction, step)
        autograd = float((grads[which].numpy() * direction).sum())
        assert autograd == pytest.approx(fd, rel=1e-6, abs=1e-10), (which, autograd, fd)


# -- solver bookkeeping: work per iteration, marginal error, convergence flag -------------
class CountingTorch:
    """The dense torch backend with the generic (uncached) pair, counting softmin calls."""

    def __new__(cls):
        from kpbench.backends.base import Pair
        from kpbench.backends.torch_dense import TorchBackend

        class Counting(TorchBackend):
            name = "torch-counting"
            calls = 0

            def prepare_pair(self, x, y, p, reuse=None):
                return Pair(self, x, y, p)

            def _softmin(self, x, y, h, *, eps, p):
                type(self).calls += 1
                return super()._softmin(x, y, h, eps=eps, p=p)

        return Counting()


@pytest.mark.parametrize("debias,per_iteration", [(True, 4), (False, 2)])
def test_each_iteration_costs_one_softmin_per_potential(debias, per_iteration):
    """4 softmins per iteration with debias (2 without), in the eps-scaling and in the tol
    phase alike; plus the initialisation and the last extrapolation."""
    bk = CountingTorch()
    x, y = t64(*cloud_pair(30, 20))
    _, info = losses.sinkhorn(x=x, y=y, blur=0.1, tol=1e-9, debias=debias, backend=bk,
                              return_info=True)
    assert info.iterations > len(info.eps_schedule) + 5   # the tol phase ran
    assert type(bk).calls == per_iteration * (info.iterations + 2)


def test_marginal_error_is_that_of_the_cross_plan():
    """info.marginal_err = |pi 1 - a|_1 + |pi^T 1 - b|_1 of the solver's potentials,
    checked against the plan built from them in float64."""
    from kpbench.backends import get_backend
    from kpbench.sinkhorn import SinkhornSolver

    x, y = t64(*cloud_pair(30, 20))
    a, b = torch.full((30,), 1 / 30, dtype=torch.float64), torch.full((20,), 1 / 20, dtype=torch.float64)
    solver = SinkhornSolver(get_backend("torch"), a, x, b, y, p=2, reach=None, debias=True)
    eps = 0.1**2
    state, _, _ = solver.solve([1.0, 0.1, eps, eps], None, 10)
    error = solver.marginal_error(state, solver.extrapolate(state, eps), eps)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1) / 2
    plan = a[:, None] * b[None] * torch.exp((state[0][:, None] + state[1][None] - cost) / eps)
    expected = float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())
    assert error == pytest.approx(expected, rel=1e-10)
    assert error > 1e-4   # four iterations: far from converged, so the check has teeth


@pytest.mark.parametrize("reach", [None, 0.5])
def test_converged_flag_and_marginal_error_follow_the_tolerance(reach):
    x, y = cloud_pair(30, 20)
    run = dict(x=x, y=y, blur=0.1, reach=reach, return_info=True, backend="torch")
    _, fast = losses.sinkhorn(**run)
    _, tight = losses.sinkhorn(tol=1e-11, max_iter=3000, **run)
    _, capped = losses.sinkhorn(tol=1e-11, max_iter=12, **run)
    assert fast.converged is None and tight.converged is True
    assert capped.converged is False and capped.iterations == 12
    assert tight.marginal_err < 1e-9 < fast.marginal_err
    assert tight.marginal_err < capped.marginal_err


def test_geomloss_schedule_runs_the_first_eps_twice():
    from kpbench.sinkhorn import epsilon_schedule

    ours = epsilon_schedule(1.7, 0.05, 2, 0.5)
    theirs = epsilon_schedule(1.7, 0.05, 2, 0.5, kind="geomloss")
    assert theirs[0] == theirs[1] == pytest.approx(1.7**2) and ours[0] == pytest.approx(1.7**2)
    assert len(theirs) == len(ours) + 1 and theirs[-1] == ours[-1] == pytest.approx(0.05**2)
    assert epsilon_schedule(0.0, 0.05, 2, 0.5, kind="geomloss")[-1] == pytest.approx(0.05**2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cached_pairs_agree_with_the_primitives(backend):
    """A prepared pair's softmins (cost matrix / compiled reduction reused) equal the
    primitive's, in both directions, with and without gradients."""
    from kpbench.backends import get_backend

    bk = get_backend(backend)
    x, y = t64(*cloud_pair(30, 20), grad=True)
    h_y, h_x = torch.randn(20, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    pair = bk.prepare_pair(x, y, 2)
    with torch.no_grad():
        assert torch.allclose(pair.softmin(h_y, 0.01), bk.softmin(x, y, h_y, eps=0.01, p=2))
        assert torch.allclose(pair.softmin_t(h_x, 0.01), bk.softmin(y, x, h_x, eps=0.01, p=2))
    out = (pair.softmin(h_y, 0.01) ** 2).sum() + pair.softmin_t(h_x, 0.01).sum()
    ref = (bk.softmin(x, y, h_y, eps=0.01, p=2) ** 2).sum() + bk.softmin(y, x, h_x, eps=0.01, p=2).sum()
    for g, r in zip(torch.autograd.grad(out, [x, y]), torch.autograd.grad(ref, [x, y])):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12)
