"""Every input check of ``kpbench.backends.base`` and ``kpbench.losses``, fed exactly the
value it refuses, and next to it the nearest value it must accept: a check loosened or
tightened by one step (``<`` for ``<=``, a dropped ``+inf`` test) fails here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kpbench import losses
from kpbench.backends import base, get_backend
from kpbench.backends.torch_dense import TorchBackend
from kpbench.errors import BackendUnavailable, KPBenchError, MemoryBudgetExceeded, UnsupportedCombination

TINY = 5e-324                       # the smallest positive float
rng = np.random.default_rng(1)
X = torch.tensor(rng.random((6, 2)))
Y = torch.tensor(rng.random((5, 2)))


def at(t, value, index=-1):
    """``t`` with one entry replaced by ``value``."""
    t = t.clone() if isinstance(t, torch.Tensor) else t.copy()
    t.reshape(-1)[index] = value
    return t


# -- scalars ---------------------------------------------------------------------------------
@pytest.mark.parametrize("blur", [0.0, -0.0, -TINY, math.inf, -math.inf, math.nan, "a", None, [1.0],
                                  "0.5", True])   # strings and bools: refused, not coerced
def test_blur_refuses_what_is_not_a_finite_positive_number(blur):
    with pytest.raises(KPBenchError, match="eps must be a"):
        base.check_blur(blur, "eps")


@pytest.mark.parametrize("blur", [TINY, 1e308, 2, np.float32(0.5)])
def test_blur_takes_every_finite_positive_number(blur):
    assert base.check_blur(blur) == float(blur)


@pytest.mark.parametrize("p", [True, False, 0, 3, 1.5, "2", None])
def test_p_refuses_everything_but_1_and_2(p):
    with pytest.raises(KPBenchError, match="p must be 1 or 2"):
        base.check_p(p)


@pytest.mark.parametrize("p", [1, 2, 2.0])
def test_p_takes_1_and_2_as_ints(p):
    assert base.check_p(p) == p and type(base.check_p(p)) is int


def test_kernel_names_are_exact():
    for kernel in base.KERNELS:
        assert base.check_kernel(kernel) == kernel
    for kernel in ("Gaussian", "gaussian ", "", None):
        with pytest.raises(KPBenchError, match="unknown kernel"):
            base.check_kernel(kernel)


@pytest.mark.parametrize("reach", [0.0, -TINY, math.inf, math.nan])
def test_reach_refuses_what_blur_refuses(reach):
    with pytest.raises(KPBenchError, match="reach must be a finite number > 0"):
        losses.sinkhorn(x=X, y=Y, reach=reach)


def test_iters_of_the_multiplicative_sinkhorn_start_at_one():
    with pytest.raises(KPBenchError, match="iters must be a whole number >= 1"):
        losses.sinkhorn_multiplicative(x=X, y=Y, iters=0)
    assert math.isfinite(float(losses.sinkhorn_multiplicative(x=X, y=Y, iters=1, blur=1.0)))


def test_names_of_losses_and_schedules_are_exact():
    with pytest.raises(KPBenchError, match="unknown loss 'Sinkhorn'"):
        losses.make_loss("Sinkhorn")
    assert losses.make_loss("sinkhorn", blur=0.5)(x=X, y=Y) >= 0
    with pytest.raises(KPBenchError, match="unknown schedule 'GeomLoss'"):
        losses.sinkhorn(x=X, y=Y, schedule="GeomLoss")


# -- point clouds (both array modules: torch tensors and NumPy arrays) -------------------
@pytest.fixture(params=["torch", "numpy"])
def cloud(request):
    return X if request.param == "torch" else X.numpy()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_cloud_with_one_non_finite_coordinate_is_refused(cloud, value):
    with pytest.raises(KPBenchError, match="x contains NaN or inf"):
        base.check_cloud(at(cloud, value), "x")


def test_a_cloud_needs_two_axes_a_point_and_a_dimension_and_floats(cloud):
    for bad, message in ((cloud[0], "must have shape \\(N, D\\)"),
                         (cloud[None], "must have shape \\(N, D\\)"),
                         (cloud[:0], "empty point cloud"),
                         (cloud[:, :0], "dimension D=0"),
                         ((cloud * 10).astype(int) if isinstance(cloud, np.ndarray)
                          else (cloud * 10).long(), "must be floating point")):
        with pytest.raises(KPBenchError, match=message):
            base.check_cloud(bad, "x")
    base.check_cloud(cloud[:1, :1], "x")   # one point in one dimension is a cloud


def test_a_pair_needs_one_dimension_and_one_dtype():
    with pytest.raises(KPBenchError, match="x has D=2 but y has D=1"):
        base.check_pair(X, Y[:, :1])
    with pytest.raises(KPBenchError, match="x is float64 but y is float32"):
        base.check_pair(X, Y.float())
    base.check_pair(X, Y)


# -- signals: weights b (>= 0, finite) and log-weights h (may be -inf) -----------------------
B = torch.full((5,), 0.2, dtype=torch.float64)


@pytest.mark.parametrize("value, message", [(math.nan, "b contains NaN"), (math.inf, "b contains inf"),
                                            (-math.inf, "b contains inf"),
                                            (-TINY, "b has negative entries")])
def test_weights_refuse_one_bad_entry(value, message):
    with pytest.raises(KPBenchError, match=message):
        base.check_signal(at(B, value), 5, "y", "b", nonnegative=True)
    with pytest.raises(KPBenchError, match=message):            # through a loss, too
        losses.mmd(None, X, at(B, value), Y)


def test_infinite_weights_are_refused_even_where_negative_ones_are_allowed():
    """kernel_product's b is a signal, not a mass: negative entries are fine, +inf is not
    (a kernel product would silently return inf)."""
    with pytest.raises(KPBenchError, match="b contains inf"):
        losses.kernel_product(X, Y, at(B, math.inf))
    out = losses.kernel_product(X, Y, at(B, -1.0))
    assert torch.isfinite(out).all()


def test_a_zero_weight_is_a_weight():
    base.check_signal(at(B, 0.0), 5, "y", "b", nonnegative=True)
    assert math.isfinite(float(losses.mmd(None, X, at(B, 0.0), Y)))


@pytest.mark.parametrize("value, message", [(math.nan, "h contains NaN"), (math.inf, "h contains inf")])
def test_log_weights_refuse_nan_and_plus_infinity_and_take_minus_infinity(value, message):
    h = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(KPBenchError, match=message):
        losses.softmin(X, Y, at(h, value), eps=0.1)
    assert torch.isfinite(losses.softmin(X, Y, at(h, -math.inf), eps=0.1)).all()
    with pytest.raises(KPBenchError, match="h contains inf"):
        base.check_signal(at(h, -math.inf), 5, "y", "h")   # -inf only where allowed


def test_a_signal_matches_its_cloud_in_length_and_has_columns_and_floats():
    for bad, message in ((B[:4], "must have shape \\(5,\\) or \\(5, K\\)"),
                         (torch.cat([B, B[:1]]), "must have shape \\(5,\\)"),
                         (B[:, None, None], "must have shape"),
                         (B[:, None][:, :0], "zero columns"),
                         (B.long(), "must be floating point")):
        with pytest.raises(KPBenchError, match=message):
            base.check_signal(bad, 5, "y", "b")
    base.check_signal(B[:, None].repeat(1, 3), 5, "y", "b")   # (M, K) is a signal


def test_softmin_log_weights_are_one_column():
    with pytest.raises(KPBenchError, match="h must have shape \\(5,\\)"):
        losses.softmin(X, Y, torch.zeros(5, 1, dtype=torch.float64), eps=0.1)


# -- what a loss checks on top --------------------------------------------------------------
def test_a_loss_needs_both_clouds():
    for x, y in ((None, Y), (X, None)):
        with pytest.raises(KPBenchError, match="both point clouds x and y are required"):
            losses.mmd(x=x, y=y)


def test_loss_weights_are_one_axis_of_positive_total_mass_in_the_points_dtype():
    a = torch.full((6,), 1 / 6, dtype=torch.float64)
    with pytest.raises(KPBenchError, match="a must have shape \\(6,\\)"):
        losses.mmd(a[:, None], X, None, Y)
    with pytest.raises(KPBenchError, match="a has zero total mass"):
        losses.mmd(torch.zeros(6, dtype=torch.float64), X, None, Y)
    with pytest.raises(KPBenchError, match="weights must have the dtype of the points"):
        losses.mmd(a.float(), X, None, Y)
    assert math.isfinite(float(losses.mmd(at(torch.zeros(6, dtype=torch.float64), TINY), X, None, Y)))


@pytest.mark.parametrize("excess, refused", [(3e-5, True), (0.5e-5, False)])
def test_balanced_ot_tolerates_masses_within_its_relative_tolerance(excess, refused):
    b = torch.full((5,), (1 + excess) / 5, dtype=torch.float64)
    if refused:
        with pytest.raises(KPBenchError, match="balanced OT needs equal total masses"):
            losses.sinkhorn(None, X, b, Y, blur=0.5)
        losses.sinkhorn(None, X, b, Y, blur=0.5, reach=1.0)   # unbalanced: any masses
    else:
        assert math.isfinite(float(losses.sinkhorn(None, X, b, Y, blur=0.5)))


# -- the backend's own refusals ----------------------------------------------------------------
class LossesOnly(TorchBackend):
    name = "losses-only"
    capabilities = base.Capabilities(autograd=True, cuda=False, float32=True, float64=True,
                                     dense=False, primitives=False)


class Unavailable(TorchBackend):
    name = "unavailable"

    def available(self):
        return False, "no such device here"


class Budgeted(TorchBackend):
    """A dense backend whose budget is the estimate of a 6 x 5 kernel product in float64."""

    name = "budgeted"

    def memory_budget(self, device):
        return self.memory_estimate("kernel_product", 6, 5, 2, 8) - self.shortfall

    shortfall = 0


def test_a_backend_without_primitives_refuses_them_and_losses_on_them():
    with pytest.raises(UnsupportedCombination, match="losses only, no kernel_product"):
        LossesOnly().kernel_product(X, Y, B, kernel="gaussian", blur=0.1)
    with pytest.raises(UnsupportedCombination, match="no softmin"):
        LossesOnly().softmin(X, Y, B, eps=0.1, p=2)
    with pytest.raises(UnsupportedCombination, match="has no mmd"):
        losses.mmd(x=X, y=Y, backend=LossesOnly())


def test_an_unavailable_backend_says_why():
    with pytest.raises(BackendUnavailable, match="'unavailable' is unavailable: no such device here"):
        Unavailable().require_available()


def test_the_memory_check_refuses_one_byte_over_the_budget_and_takes_the_budget():
    bk = Budgeted()
    assert bk.kernel_product(X, Y, B, kernel="gaussian", blur=0.1).shape == (6,)
    bk.shortfall = 1
    with pytest.raises(MemoryBudgetExceeded, match="budgeted kernel_product at N=6, M=5, D=2"):
        bk.kernel_product(X, Y, B, kernel="gaussian", blur=0.1)
    assert bk.kernel_product(X, Y, B, kernel="gaussian", blur=0.1, validate=False).shape == (6,)


def test_primitives_check_on_every_backend_exactly_like_the_losses():
    for name in ("numpy", "torch"):
        bk = get_backend(name)
        x, y, b = (t.numpy() for t in (X, Y, B)) if bk.array_module == "numpy" else (X, Y, B)
        with pytest.raises(KPBenchError, match="b contains inf"):
            bk.kernel_product(x, y, at(b, math.inf), kernel="gaussian", blur=0.1)
        with pytest.raises(KPBenchError, match="y contains NaN or inf"):
            bk.softmin(x, at(y, -math.inf), b, eps=0.1, p=2)


def test_softmin_names_the_cloud_its_log_weights_belong_to():
    with pytest.raises(KPBenchError, match="^h must have shape \\(5,\\) or \\(5, K\\) to match y with 5 "
                                           "points, got shape \\(4,\\)$"):
        get_backend("torch").softmin(X, Y, torch.zeros(4, dtype=torch.float64), eps=0.1, p=2)


def test_the_memory_check_names_the_primitive_it_refuses():
    bk = Budgeted()
    bk.shortfall = 1
    with pytest.raises(MemoryBudgetExceeded, match="^budgeted softmin at N=6, M=5, D=2 needs"):
        bk.softmin(X, Y, torch.zeros(5, dtype=torch.float64), eps=0.1, p=2)
