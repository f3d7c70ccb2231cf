"""The user's memory budget and the backend's own, and explicit binding (issue 24, item 4 and 6).

A ``--memory-budget`` replaces the backend's own limit (the one pre-flight asks it; the
bound computation does not check again); a refusal is retryable when its budget came from
the free memory of the moment (a backend's own), not when it came from the user. The
losses bind explicitly: ``bind_*`` return callables, the public losses values, and a
Backend object passed in is used as is.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kpbench import backends, losses
from kpbench.backends.sinkhorn_types import SinkhornResult
from kpbench.backends.torch_dense import TorchBackend
from kpbench.bench import ops
from kpbench.bench.measure import run_point
from kpbench.bench.settings import Settings
from kpbench.bench.plan import Point
from kpbench.errors import MemoryBudgetExceeded

TINY = 1024   # bytes: the tiny backend's own budget (as if the machine had that much free)
QUICK = Settings(repeats=1, warmup=0)


class TinyBudgetTorch(TorchBackend):
    """Dense torch whose own budget (normally half the free memory) is 1 KiB."""

    name = "torch-tiny-budget-test"

    def memory_budget(self, device):
        return TINY


class UnavailableTorch(TorchBackend):
    """Dense torch that says it cannot run here (only its lookup by name would ask)."""

    name = "torch-unavailable-test"

    def available(self):
        return False, "unavailable on purpose"


@pytest.fixture
def tiny():
    backends.register_backend(TinyBudgetTorch.name, f"{__name__}:TinyBudgetTorch")
    yield TinyBudgetTorch.name
    backends._REGISTRY.pop(TinyBudgetTorch.name)
    backends._INSTANCES.pop(TinyBudgetTorch.name, None)


def kernel_point(backend: str, op: str = "kernel_product") -> Point:
    return Point(op=op, backend=backend, kernel="gaussian", N=200, M=200, D=3, blur=0.1,
                 p=None, reach=None, dtype="float32", device="cpu", seed=0, iters=None,
                 scaling=None)


def test_a_users_budget_replaces_the_backends_own_limit(tiny):
    # the estimate (3 x 200 x 200 x 4 bytes) is over the backend's 1 KiB, under the user's
    row = run_point(kernel_point(tiny), "speed", Settings(repeats=1, warmup=0,
                                                                 memory_budget=10**9))
    assert row["status"] == "ok", row.get("error")
    assert row["mem_estimate_bytes"] == 3 * 200 * 200 * 4
    # without it the backend's own refuses, retryably (free memory changes)
    row = run_point(kernel_point(tiny), "speed", QUICK)
    assert (row["status"], row["retryable"]) == ("skipped", True)
    assert "memory budget of 1.0 KiB" in row["error"]
    # a user's budget that refuses refuses again anywhere: not retryable
    row = run_point(kernel_point(tiny), "speed", Settings(memory_budget=TINY))
    assert (row["status"], row["retryable"]) == ("skipped", False)


@pytest.fixture
def free_memory_op(tiny):
    """A custom op whose computation meets the backend's own (free-memory) budget."""
    name = "_test_free_memory_refusal"

    def prepare(point, data):
        def call():
            backends.get_backend(tiny).check_memory("kernel_product", 100, 100, 3,
                                                    np.zeros(1, np.float32))

        return ops.Prepared(call, lambda out: ops.Summary(0.0))

    ops.register_op(ops.OpInfo(name, "custom", False, None), prepare)
    yield name
    ops.OPS.pop(name)
    ops._CUSTOM_PREPARE.pop(name)


def test_a_free_memory_refusal_under_a_users_budget_stays_retryable(free_memory_op):
    pt = Point(op=free_memory_op, backend="numpy", kernel="test", N=16, M=16, D=3, blur=0.1,
               p=None, reach=None, dtype="float64", device="cpu", seed=0, iters=None,
               scaling=None)
    row = run_point(pt, "speed", Settings(repeats=1, warmup=0, memory_budget=10**12))
    assert row["status"] == "skipped" and "memory budget is 1.0 KiB" in row["error"]
    assert row["retryable"] is True


def test_binding_is_explicit_and_a_backend_object_is_used_as_is(tiny):
    x, y = torch.rand(30, 2, dtype=torch.float64), torch.rand(20, 2, dtype=torch.float64)
    b = torch.rand(20, dtype=torch.float64)
    solve = losses.bind_sinkhorn(x=x, y=y, blur=0.1, tol=1e-6, backend="torch")
    result = solve()
    assert isinstance(result, SinkhornResult) and result.converged is True
    value = losses.sinkhorn(x=x, y=y, blur=0.1, tol=1e-6, backend="torch")
    assert isinstance(value, torch.Tensor) and float(value) == float(result.value)
    assert float(losses.bind_loss("mmd", x=x, y=y, blur=0.2)()) == float(losses.mmd(x=x, y=y, blur=0.2))
    # an object is not looked up again (no availability check): its caller did that
    unavailable = UnavailableTorch()
    assert losses.kernel_product(x, y, b, backend=unavailable).shape == (30,)
    # preflight=False: the caller made the memory check; the default makes it
    small = backends.get_backend(tiny)
    with pytest.raises(MemoryBudgetExceeded):
        losses.bind_kernel_product(x, y, b, backend=small)
    with pytest.raises(MemoryBudgetExceeded):
        losses.bind_loss("sinkhorn", x=x, y=y, backend=small)
    assert losses.bind_kernel_product(x, y, b, backend=small, preflight=False)().shape == (30,)
    assert np.isfinite(float(losses.bind_loss("sinkhorn", x=x, y=y, backend=small,
                                              preflight=False)()))


def test_the_references_fixed_size_cap_is_not_retryable():
    # the float64 reference refuses past a constant (MAX_MATRIX_BYTES), whatever memory is
    # free: --retry-failed would meet the same refusal, so the row must not invite it
    from kpbench.reference.sinkhorn import np_sinkhorn

    x = np.zeros((20_000, 1))
    with pytest.raises(MemoryBudgetExceeded, match="float64 Sinkhorn reference") as refused:
        np_sinkhorn(None, x, None, x, p=2, blur=0.1)
    assert refused.value.retryable is False
