"""Accuracy: one call, ``rel_err = |value - ref| / |ref|`` (norm-based for vector outputs)
against the float64 truth on the same inputs (:func:`kpbench.bench.ops.reference`).
For ``sinkhorn`` with N = M <= 2000, p = 2, balanced and blur <= 0.1, ``rel_err_exact``
compares S_eps with the exact W2^2/2 (uniform weights: an assignment,
scipy.optimize.linear_sum_assignment) -- the entropic bias plus the arithmetic error.
Gradients of the differentiated losses: ``grad_fd_rel_err`` (:mod:`.gradcheck`).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from kpbench.bench import ops
from kpbench.bench.inputs import cast

from .gradcheck import fd_gradient_error
from .timing import first_call

EXACT_MAX_N = 2000
EXACT_MAX_BLUR = 0.1
GRAD_FD_MAX_N = 500


def measure_accuracy(point, backend, prepared, data) -> dict:
    _timer, first_call_s, summary = first_call(prepared, point.device)
    result = dict(first_call_s=first_call_s, value=summary.value, iterations=summary.iterations,
                  marginal_err=summary.marginal_err, converged=summary.converged)
    if ops.OPS[point.op].family == "custom":
        return result
    if is_the_reference(point):
        truth = summary
        result["rel_err"] = 0.0
    else:
        truth = ops.reference(point, data)
        result["rel_err"] = relative_error(summary, truth)
    result["truth_converged"], result["truth_marginal_err"] = truth.converged, truth.marginal_err
    result["grad_fd_rel_err"] = grad_fd_error(point, backend, data)
    if exact_applies(point) and getattr(data.clouds, "a", None) is None \
            and getattr(data.clouds, "b", None) is None:   # an assignment: uniform weights only
        exact = exact_ot_w2(data.x, data.y)
        result["rel_err_exact"] = abs(summary.value - exact) / abs(exact)
    return result


def is_the_reference(point) -> bool:
    """The point computes exactly what :func:`ops.reference` would."""
    return (point.backend == "numpy" and point.dtype == "float64" and point.iters is None
            and not ops.OPS[point.op].grad)


def exact_applies(point) -> bool:
    return (point.op == "sinkhorn" and point.p == 2 and point.reach is None
            and point.N == point.M <= EXACT_MAX_N and point.blur <= EXACT_MAX_BLUR)


def exact_ot_w2(x: np.ndarray, y: np.ndarray) -> float:
    """W2^2 / 2 between uniform clouds of equal size: an optimal assignment."""
    from scipy.optimize import linear_sum_assignment

    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def relative_error(got, ref) -> float:
    """|got - ref| / |ref|, with Euclidean norms for vector outputs (two ops.Summary)."""
    if got.vector is not None and ref.vector is not None:
        diff, scale = np.linalg.norm(got.vector - ref.vector), np.linalg.norm(ref.vector)
    else:
        diff, scale = abs(got.value - ref.value), abs(ref.value)
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / scale)


def grad_fd_error(point, backend, data) -> float | None:
    """The largest relative error of the point's loss gradient (weights a, b and positions
    x, y, one direction each, autograd on ``backend`` in the point's dtype/device) against
    central finite differences of the converged float64 value (:mod:`.gradcheck`); None
    for ops that are not a differentiated loss, or above GRAD_FD_MAX_N points (eight
    converged float64 solves)."""
    if point.op not in ("sinkhorn_grad", "flow_step") or max(point.N, point.M) > GRAD_FD_MAX_N:
        return None
    point = ops.at_scale(point)
    converged = dataclasses.replace(point, iters=None, scaling=None, tol=None)
    x = cast(data.x, backend, point.dtype, point.device)
    a, b = data.weights(point.N, point.M) if point.op == "sinkhorn_grad" else \
        (np.full(point.N, 1.0 / point.N), np.full(point.M, 1.0 / point.M))
    # unbalanced Sinkhorn's weights may move freely; the other losses compare equal masses
    balanced = not (point.reach is not None and "reach" in ops.op_fields(point.op, point.loss))
    return fd_gradient_error(_loss(point), a, x, b, data.y, backend=backend, balanced=balanced,
                             seed=point.seed, reference_loss=_loss(converged))


def _loss(point):
    """The point's loss as ``loss(a, x, b, y, backend=...)``."""
    if point.op == "sinkhorn_grad":
        from kpbench import losses

        return functools.partial(losses.sinkhorn, **ops.sinkhorn_options(point))
    return lambda a, x, b, y, backend: ops.flow_loss(point, backend)(a, x, b, y)
