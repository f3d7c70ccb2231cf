"""Issue 23, item 8: the numeric extremes that gave NaN, an overflow or a raw exception.
Each is now a clear KPBenchError naming the value and what is allowed (derived from the
dtype's range and the clouds' diameter), or a right value checked against the float64
reference. The option-type and dtype cases of item 8 are in test_validation_edges.py."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from kpbench import losses
from kpbench.backends import get_backend
from kpbench.backends.torch_dense import TorchBackend
from kpbench.errors import KPBenchError, MemoryBudgetExceeded, format_bytes

rng = np.random.default_rng(7)
X64 = torch.tensor(rng.random((6, 2)))
Y64 = torch.tensor(rng.random((5, 2)))
TORCH_BACKENDS = ["torch", "keops"]


def clouds(dtype, scale=1.0):
    return (X64 * scale).to(dtype), (Y64 * scale).to(dtype)


# -- blur and reach beyond what the dtype represents -------------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("blur, shown", [(1e-200, "= 0 is not a normal float64"),
                                         (1e200, "= inf is not a normal float64")])
def test_gaussian_mmd_refuses_a_blur_whose_square_float64_cannot_hold(backend, blur, shown):
    """Was NaN at 1e-200 (exp(-0/0) on the diagonal, the reference too), OverflowError at 1e200."""
    x, y = clouds(torch.float64)
    with pytest.raises(KPBenchError, match=re.escape(f"2 blur^2 at blur={blur!r} (gaussian kernel) {shown}")):
        losses.mmd(x=x, y=y, blur=blur, backend=backend)


def test_laplacian_kernel_product_takes_any_normal_blur_of_its_dtype():
    """float32 blur 1e-200 was NaN (blur cast to 0); float64 computes it: the kernel is the
    identity on coinciding points (the reference's value)."""
    x, y = clouds(torch.float32)
    with pytest.raises(KPBenchError, match=r"blur \(laplacian kernel\) = 1e-200 is not a normal float32"):
        losses.kernel_product(x, y, torch.ones(5), kernel="laplacian", blur=1e-200)
    x, y = clouds(torch.float64)
    value = losses.mmd(x=x, y=y, kernel="laplacian", blur=1e-200)
    assert float(value) == pytest.approx(losses.mmd(x=x, y=y, kernel="laplacian", blur=1e-200,
                                                    backend="numpy"), rel=1e-12)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("dtype, params, message", [
    (torch.float32, dict(blur=1e30), r"eps = blur\^2 at blur=1e\+30 = 1e\+60 is not a normal float32"),
    (torch.float64, dict(blur=1e200), r"eps = blur\^2 at blur=1e\+200 = inf is not a normal float64"),
    (torch.float64, dict(blur=1e-200), r"eps = blur\^2 at blur=1e-200 = 0 is not a normal float64"),
    (torch.float64, dict(reach=1e300), r"rho = reach\^2 at reach=1e\+300 = inf is not a normal"),
    (torch.float64, dict(reach=1e-300), r"rho = reach\^2 at reach=1e-300 = 0 is not a normal"),
    (torch.float32, dict(reach=1e30), r"rho = reach\^2 at reach=1e\+30 = 1e\+60 is not a normal"),
])
def test_sinkhorn_refuses_eps_and_rho_that_are_not_normal_numbers(backend, dtype, params, message):
    """Were NaN (float32 blur 1e30), OverflowError (1e200, reach 1e300) and ZeroDivisionError
    (1e-200, reach 1e-300)."""
    x, y = clouds(dtype)
    with pytest.raises(KPBenchError, match=message):
        losses.sinkhorn(x=x, y=y, **params, backend=backend)


@pytest.mark.parametrize("dtype, blur, reach, refused", [
    (torch.float32, 100.0, None, True), (torch.float32, 10.0, None, False),
    (torch.float64, 1e5, None, True), (torch.float64, 1e3, None, False),
    (torch.float32, 0.1, 1e3, True), (torch.float64, 0.1, 1e8, True),
])
def test_sinkhorn_refuses_scales_whose_rounding_eats_half_the_digits(dtype, blur, reach, refused):
    """eps or rho beyond largest cost / sqrt(resolution) (unit square): float32 S was 2 %
    off at blur 100, -0.05 for 0.048 at 1000; 3 % off at reach 100 (blur .1), 0 from 1e4;
    float64 0 at blur 1e8 and reach 1e8. Below the bound, the error is within what it
    promises: sqrt(resolution) x the largest cost."""
    x, y = clouds(dtype)
    call = lambda: losses.sinkhorn(x=x, y=y, blur=blur, reach=reach)   # noqa: E731
    if refused:
        with pytest.raises(KPBenchError, match="more than half of the value's digits"):
            call()
        return
    truth = losses.sinkhorn(x=X64, y=Y64, blur=blur, reach=reach, backend="numpy")
    largest = float(np.linalg.norm(np.ptp(np.vstack([X64, Y64]), 0))) ** 2 / 2
    assert abs(float(call()) - truth) <= math.sqrt(torch.finfo(dtype).eps) * largest


def test_the_reference_refuses_a_blur_whose_costs_vanish_in_its_rounding():
    """blur 1e8 on the unit square read 2.2 (truth 0.048) and 1e30 read -1.1e44, 'converged'."""
    with pytest.raises(KPBenchError, match="vanish in the potentials' rounding"):
        losses.sinkhorn(x=X64, y=Y64, blur=1e8, backend="numpy")
    assert losses.sinkhorn(x=X64, y=Y64, blur=1e3, backend="numpy") > 0


@pytest.mark.parametrize("loss", [losses.hausdorff, losses.log_likelihood])
def test_softmin_losses_refuse_a_zero_eps(loss):
    """Were a ZeroDivisionError (hausdorff) and NaN (log-likelihood) at blur 1e-200."""
    x, y = clouds(torch.float64)
    with pytest.raises(KPBenchError, match="blur=1e-200 = 0 is not a normal float64"):
        loss(x=x, y=y, blur=1e-200)


# -- coordinates and weights near the dtype's limits --------------------------------------
@pytest.mark.parametrize("backend", TORCH_BACKENDS + ["numpy"])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_kernel_products_refuse_float32_clouds_whose_squared_distances_overflow(backend, kernel):
    """float32 clouds spanning 1e20: NaN (gaussian) or partly wrong values (laplacian, from
    a span of 1.8e19); the numpy reference computes in float64 and gives the right value."""
    x, y = clouds(torch.float32, 1e20)
    b = torch.ones(5)
    if backend == "numpy":
        truth = losses.kernel_product(x.double(), y.double(), b.double(), kernel=kernel,
                                      blur=1e20, backend="torch")
        assert np.allclose(losses.kernel_product(x, y, b, kernel=kernel, blur=1e20, backend=backend),
                           truth.numpy(), rtol=1e-6)
        return
    with pytest.raises(KPBenchError, match="squared distances overflow float32"):
        losses.kernel_product(x, y, b, kernel=kernel, blur=1e20, backend=backend)
    with pytest.raises(KPBenchError, match="squared distances overflow float32"):
        losses.mmd(x=x, y=y, kernel=kernel, blur=1e20, backend=backend)


def test_float32_clouds_far_from_the_origin_compute_where_their_span_allows():
    """Coordinates near 1e37 with a span of 1e18: diameter() refused them (4 |x|^2 overflows,
    which only the uncentred expansion needed) and the centring's float32 mean overflowed
    (40 x 1e37: the kernel product was NaN);
    now the kernel product and Sinkhorn match the float64 computation on the same points."""
    gen = np.random.default_rng(3)
    x = torch.tensor(gen.random((40, 2)) * 1e18 + 1e37, dtype=torch.float32)
    y = torch.tensor(gen.random((30, 2)) * 1e18 + 1e37, dtype=torch.float32)
    x64, y64 = x.double(), y.double()
    b = torch.ones(30)
    kp = losses.kernel_product(x, y, b, blur=5e17)
    assert torch.allclose(kp.double(), losses.kernel_product(x64, y64, b.double(), blur=5e17),
                          rtol=1e-3)
    value = float(losses.sinkhorn(x=x, y=y, blur=5e17))
    assert value == pytest.approx(float(losses.sinkhorn(x=x64, y=y64, blur=5e17)), rel=1e-3)


def test_mmd_refuses_weights_whose_terms_overflow_and_computes_them_in_float64():
    """Weights full(5, 3e38) in float32: NaN (the mass is inf, the terms inf - inf); the
    MMD scales as the mass squared. In float64 the value is the reference's (4.48e77)."""
    x, y = clouds(torch.float32)
    big = torch.full((6,), 3e38)
    with pytest.raises(KPBenchError, match="a has total mass 1.8e\\+39, beyond float32's largest"):
        losses.mmd(big, x, None, y)
    with pytest.raises(KPBenchError, match="mmd's terms reach .* overflow float32"):
        losses.mmd(big / 6, x, torch.full((5,), 1e37), y)
    value = losses.mmd(big.double(), x.double(), torch.full((5,), 3e38, dtype=torch.float64), y.double())
    truth = losses.mmd(big.double(), x.double(), torch.full((5,), 3e38, dtype=torch.float64),
                       y.double(), backend="numpy")
    assert math.isfinite(truth) and float(value) == pytest.approx(truth, rel=1e-12)


# -- memory ---------------------------------------------------------------------------
def test_the_kernel_product_estimate_counts_the_columns_of_b():
    """b of shape (100, 250000) was estimated at 120 KB; its output alone is 100 MB (peak
    RSS growth measured 100 MB, 200 MB with backward)."""
    torch_bk = TorchBackend()
    base = torch_bk.memory_estimate("kernel_product", 100, 100, 3, 4)
    assert torch_bk.memory_estimate("kernel_product", 100, 100, 3, 4, columns=250_000) >= \
        base + 100 * 250_000 * 4

    class Tight(TorchBackend):
        def memory_budget(self, device):
            return 2**20

    x, y = clouds(torch.float32)
    with pytest.raises(MemoryBudgetExceeded, match="K=250000"):
        Tight().kernel_product(x, y, torch.ones(5, 250_000), kernel="gaussian", blur=1.0)


@pytest.mark.parametrize("peer", ["geomloss-tensorized", "pot"])
def test_dense_peers_get_the_memory_pre_flight_through_the_losses(peer):
    """At N=200000 they tried to allocate 160-320 GB (the losses skipped the pre-flight for
    a backend's own losses); now refused before any work, naming the estimate. Here at
    N=300 under a budget of 1 MiB (the estimates themselves: scripts/peer_memory.py)."""
    bk = get_backend(peer)
    ok, why = bk.available()
    if not ok:
        pytest.skip(why)
    tight = type("Tight", (type(bk),), {"memory_budget": lambda self, device: 2**20})()
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(0))
    estimate = bk.memory_estimate("sinkhorn", 300, 300, 3, 4)
    with pytest.raises(MemoryBudgetExceeded, match=re.escape(
            f"{peer} sinkhorn at N=300, M=300, D=3 needs an estimated {format_bytes(estimate)}")):
        losses.sinkhorn(x=x, y=x[:200], backend=tight)


def test_cuda_kernels_refuse_scaled_coordinates_that_overflow(monkeypatch):
    """kernels.cu multiplies coordinates by ~1/blur: float32, laplacian, blur 1e-30, span 1e9
    gave NaN (inf - inf) where torch and the reference give 0; float64 laplacian blur 1e-200
    raised ZeroDivisionError (the gaussian scale 1/blur^2 was computed for every kernel)."""
    monkeypatch.setenv("KPBENCH_CUDA_HOST", "1")
    cuda = get_backend("cuda")
    ok, why = cuda.available()
    if not ok:
        pytest.skip(why)
    x, y = clouds(torch.float32, 1e9)
    with pytest.raises(KPBenchError, match="cuda kernels scale the coordinates by 1.44e\\+30"):
        losses.kernel_product(x, y, torch.ones(5), kernel="laplacian", blur=1e-30, backend="cuda")
    x, y = clouds(torch.float64)
    value = losses.mmd(x=x, y=y, kernel="laplacian", blur=1e-200, backend="cuda")
    assert float(value) == pytest.approx(losses.mmd(x=x, y=y, kernel="laplacian", blur=1e-200,
                                                    backend="numpy"), rel=1e-12)
