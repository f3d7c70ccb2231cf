"""Bad input gets a clear error, never a silent wrong number."""
import numpy as np
import pytest
import torch

from kpbench import losses
from kpbench.backends import get_backend
from kpbench.errors import KPBenchError

rng = np.random.default_rng(0)
X = torch.tensor(rng.random((10, 3)))
Y = torch.tensor(rng.random((8, 3)))
B = torch.ones(8, dtype=torch.float64)


def nan_at(t, index=0):
    t = t.clone()
    t.view(-1)[index] = float("nan")
    return t


BAD_LOSS_CALLS = [
    ("dimension mismatch: x has D=3 but y has D=2", lambda: losses.mmd(x=X, y=Y[:, :2])),
    ("a must have shape", lambda: losses.sinkhorn(torch.ones(9, dtype=torch.float64) / 9, X, None, Y)),
    ("b must have shape", lambda: losses.sinkhorn(None, X, torch.ones(7, dtype=torch.float64) / 7, Y)),
    ("x is an empty point cloud", lambda: losses.sinkhorn(x=X[:0], y=Y)),
    ("y contains NaN or inf", lambda: losses.sinkhorn(x=X, y=nan_at(Y))),
    ("x contains NaN or inf", lambda: losses.hausdorff(x=X.clone().fill_(float("inf")), y=Y)),
    ("a has negative entries", lambda: losses.sinkhorn(torch.linspace(-0.1, 0.3, 10, dtype=torch.float64), X, None, Y, reach=1.0)),
    ("b contains NaN", lambda: losses.mmd(None, X, nan_at(B / 8), Y)),
    ("a has zero total mass", lambda: losses.mmd(torch.zeros(10, dtype=torch.float64), X, None, Y)),
    ("blur must be a finite number > 0", lambda: losses.sinkhorn(x=X, y=Y, blur=0)),
    ("blur must be a finite number > 0", lambda: losses.sinkhorn(x=X, y=Y, blur=-0.1)),
    ("blur must be a finite number > 0", lambda: losses.mmd(x=X, y=Y, blur=float("nan"))),
    ("unknown kernel 'cauchy'", lambda: losses.mmd(x=X, y=Y, kernel="cauchy")),
    ("unknown loss 'wasserstein'", lambda: losses.make_loss("wasserstein")),
    ("p must be 1 or 2", lambda: losses.sinkhorn(x=X, y=Y, p=3)),
    ("reach must be a finite number > 0", lambda: losses.sinkhorn(x=X, y=Y, reach=0)),
    ("dtype mismatch: x is float64 but y is float32", lambda: losses.sinkhorn(x=X, y=Y.float())),
    ("balanced OT needs equal total masses", lambda: losses.sinkhorn(None, X, B, Y)),
    ("scaling must be in", lambda: losses.sinkhorn(x=X, y=Y, scaling=1.5)),
    ("unknown backend 'tpu'", lambda: losses.sinkhorn(x=X, y=Y, backend="tpu")),
    ("x must have shape \\(N, D\\)", lambda: losses.mmd(x=X[0], y=Y)),
    ("iters must be a whole number >= 1", lambda: losses.sinkhorn_multiplicative(x=X, y=Y, iters=0)),
    # option types: refused, never coerced (issue 23, item 8)
    ("iters must be a whole number >= 1, got 2.7",
     lambda: losses.sinkhorn_multiplicative(x=X, y=Y, iters=2.7)),
    ("iters must be a number, got str 'x'", lambda: losses.sinkhorn(x=X, y=Y, iters="x")),
    ("scaling must be a number, got str '0.5'", lambda: losses.sinkhorn(x=X, y=Y, scaling="0.5")),
    ("tol must be a number, got str '1e-3'", lambda: losses.sinkhorn(x=X, y=Y, tol="1e-3")),
    ("max_iter must be a whole number >= 1, got nan",
     lambda: losses.sinkhorn(x=X, y=Y, tol=1e-3, max_iter=float("nan"))),
    ("blur must be a number, got bool True", lambda: losses.sinkhorn(x=X, y=Y, blur=True)),
    ("blur must be a number, got bool True", lambda: losses.mmd(x=X, y=Y, blur=True)),
    ("debias must be True or False, got str 'no'", lambda: losses.sinkhorn(x=X, y=Y, debias="no")),
    ("debias must be True or False", lambda: losses.sinkhorn_multiplicative(x=X, y=Y, debias=1)),
    ("potentials must be True or False", lambda: losses.sinkhorn(x=X, y=Y, potentials="yes")),
    # dtypes no backend computes in, and weights of another dtype than the points
    ("x is float16: the backends compute in float32 or float64",
     lambda: losses.sinkhorn(x=X.half(), y=Y.half())),
    ("x is bfloat16", lambda: losses.kernel_product(X.bfloat16(), Y.bfloat16(), B.bfloat16())),
    ("b must have the dtype and device of the points \\(float32, cpu\\), got float64",
     lambda: losses.kernel_product(X.float(), Y.float(), B)),
    ("h must have the dtype and device of the points",
     lambda: losses.softmin(X.float(), Y.float(), B, eps=0.1)),
]


@pytest.mark.parametrize("message,call", BAD_LOSS_CALLS, ids=[m for m, _ in BAD_LOSS_CALLS])
def test_bad_input_raises_a_clear_error(message, call):
    with pytest.raises(KPBenchError, match=message):
        call()


@pytest.mark.parametrize("backend", ["numpy", "torch", "keops"])
def test_primitives_validate_on_every_backend(backend):
    bk = get_backend(backend)
    with pytest.raises(KPBenchError, match="dimension mismatch"):
        bk.kernel_product(X, Y[:, :2], B, kernel="gaussian", blur=0.1)
    with pytest.raises(KPBenchError, match="b must have shape"):
        bk.kernel_product(X, Y, B[:5], kernel="gaussian", blur=0.1)
    with pytest.raises(KPBenchError, match="unknown kernel"):
        bk.kernel_product(X, Y, B, kernel="rbf", blur=0.1)
    with pytest.raises(KPBenchError, match="eps must be a finite number > 0"):
        bk.softmin(X, Y, B, eps=-1.0, p=2)
    with pytest.raises(KPBenchError, match="h contains NaN"):
        bk.softmin(X, Y, nan_at(B), eps=0.1, p=2)


def test_log_weights_may_be_minus_infinity():
    # log(0) = -inf is a valid log-weight: that point simply carries no mass.
    h = torch.log(torch.tensor([0.0] + [1.0] * 7, dtype=torch.float64))
    out = get_backend("torch").softmin(X, Y, h, eps=0.1, p=2)
    ref = get_backend("torch").softmin(X, Y[1:], h[1:], eps=0.1, p=2)
    assert torch.allclose(out, ref)


def test_cli_lists_backends_with_reasons(capsys):
    from kpbench.cli.main import main

    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "numpy    available" in out
    assert "cuda" in out


SOLVER_AND_SCALE_ERRORS = [
    ("x must be floating point, got int64",
     lambda: losses.sinkhorn(x=torch.ones(5, 3, dtype=torch.int64), y=torch.ones(4, 3, dtype=torch.int64))),
    ("x must be floating point", lambda: losses.sinkhorn(x=[[1, 2], [3, 4]], y=[[1, 2], [3, 5]])),
    ("tol must be a finite number >= 0", lambda: losses.sinkhorn(x=X, y=Y, tol=-1e-3)),
    ("max_iter must be a whole number >= 1", lambda: losses.sinkhorn(x=X, y=Y, tol=1e-3, max_iter=0)),
    ("unknown schedule 'fast'", lambda: losses.sinkhorn(x=X, y=Y, schedule="fast")),
    ("squared distances overflow float32", lambda: losses.sinkhorn(x=X.float() * 1e20, y=Y.float())),
    ("squared distances overflow float32", lambda: losses.sinkhorn(x=X.float() * 1e20, y=Y.float(), backend="keops")),
    ("exponents C/eps reach .* overflow float32",
     lambda: losses.sinkhorn(x=X.float() * 1e17, y=Y.float(), blur=0.01)),
    ("squared distances overflow float32", lambda: losses.hausdorff(x=X.float() * 1e20, y=Y.float())),
]


@pytest.mark.parametrize("message,call", SOLVER_AND_SCALE_ERRORS, ids=[m for m, _ in SOLVER_AND_SCALE_ERRORS])
def test_solver_options_and_overflowing_scales_are_refused(message, call):
    with pytest.raises(KPBenchError, match=message):
        call()
