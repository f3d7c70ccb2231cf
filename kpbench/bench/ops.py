"""The one op table: what each sweep op computes (axes used, loss or kernel, the op a
dense backend's memory is estimated for), how it is bound (:func:`prepare`) and what it is
compared with (:func:`reference`, the truth).

Ops (``Point.op``):

=====================  ===================================================  =============
op                     one timed call                                       ``value``
=====================  ===================================================  =============
kernel_product         out_i = sum_j k(x_i, y_j) b_j                        |out|
kernel_product_grad    d/dx of sum_i c_i out_i  (forward + backward)         |grad|
softmin                out_i = -eps log sum_j exp(h_j - |x_i-y_j|^p/(p eps))  |out|
sinkhorn               S_eps(alpha, beta), uniform weights                  S_eps
sinkhorn_grad          d S_eps / dx  (forward + backward)                   |grad|
flow_step              one Euler step of a gradient flow on a loss           the loss
=====================  ===================================================  =============

Inputs: :mod:`kpbench.bench.inputs` (generated once per point in float64, moved and
magnified for conditioning points, cast to the point's dtype/device).
The reference (:func:`reference`) is the independent float64 code of
:mod:`kpbench.reference`: what the point computed is compared with the converged
truth, so a Sinkhorn point's ``rel_err`` includes what its eps-scaling or its
iteration count left undone, not just round-off.

Plugins (:mod:`kpbench.plugins`) may add ops of family ``custom`` with
:func:`register_op`: such an op brings its own ``prepare(point, data)`` and needs no
backend (the tests' crashing and sleeping ops are registered this way).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kpbench.backends import Backend, get_backend, losses_table
from kpbench.backends.sinkhorn_types import SinkhornOptions, SinkhornResult
from kpbench.bench.inputs import Data, cast, moved
from kpbench.bench.outputs import Prepared, Summary, to_numpy, vector_summary
from kpbench.errors import KPBenchError

FLOW_LOSSES = ("sinkhorn", "mmd", "energy", "hausdorff", "log_likelihood")
FLOW_LR = 0.1


@dataclass(frozen=True)
class OpInfo:
    name: str
    family: str            # kernel | softmin | sinkhorn | flow | custom
    grad: bool             # needs autograd
    primitive: str | None  # the backend primitive the op calls (None: a loss, see loss_of)


OPS: dict[str, OpInfo] = {
    op.name: op for op in (
        OpInfo("kernel_product", "kernel", False, "kernel_product"),
        OpInfo("kernel_product_grad", "kernel", True, "kernel_product"),
        OpInfo("softmin", "softmin", False, "softmin"),
        OpInfo("sinkhorn", "sinkhorn", False, None),
        OpInfo("sinkhorn_grad", "sinkhorn", True, None),
        OpInfo("flow_step", "flow", True, None),
    )
}


def loss_of(op: str, loss: str | None) -> str | None:
    """The loss op ``op`` computes: sinkhorn for the Sinkhorn ops, the point's ``loss``
    for flow_step; None for the primitives and custom ops."""
    family = OPS[op].family
    return "sinkhorn" if family == "sinkhorn" else loss if family == "flow" else None


def memory_op(op: str, loss: str | None) -> str:
    """What a dense backend's memory_estimate is asked for op ``op`` (``loss``: the point's)."""
    return OPS[op].primitive or losses_table.memory_op(loss_of(op, loss))


def at_scale(point):
    """``point`` with blur and reach times its scale: what its op computes with. The result's
    scale is None, so that applying this twice (prepare inside the reference) scales once."""
    if point.scale is None:
        return point
    reach = None if point.reach is None else point.reach * point.scale
    return dataclasses.replace(point, blur=point.blur * point.scale, reach=reach, scale=None)


def op_fields(op: str, name: str | None = None) -> set[str]:
    """Which of kernel/p/reach/iters/scaling/tol matter for ``op`` (``name``: the flow loss)."""
    family = OPS[op].family
    if family == "kernel":
        return {"kernel"}
    if family == "softmin":
        return {"p"}
    if family == "sinkhorn":
        return {"p", "reach", "iters", "scaling", "tol"}
    if family == "flow" and name == "sinkhorn":
        return {"p", "reach", "iters", "scaling"}
    if family == "flow" and name == "hausdorff":
        return {"p"}
    return set()


def register_op(info: OpInfo, prepare_op) -> None:
    """Add a ``custom`` op: ``prepare_op(point, data) -> Prepared`` (for plugins)."""
    if info.family != "custom":
        raise KPBenchError(f"a registered op has family 'custom', got {info.family!r}")
    OPS[info.name] = info
    _CUSTOM_PREPARE[info.name] = prepare_op


_CUSTOM_PREPARE: dict[str, Callable] = {}


# -- the ops -----------------------------------------------------------------------
def prepare(point, data: Data, backend=None, dtype: str | None = None,
            device: str | None = None, preflight: bool = True) -> Prepared:
    """The op of ``point`` on ``data``, bound once (:mod:`kpbench.losses`' ``bind_*``:
    conversions, validation, and with ``preflight`` the memory check, done here): the
    timed ``call`` runs the computation and nothing else. ``backend`` (a name or the
    Backend object the caller looked up), dtype and device default to the point's."""
    from kpbench import losses

    point = at_scale(point)
    family = OPS[point.op].family
    if family == "custom":
        return _CUSTOM_PREPARE[point.op](point, data)
    if not isinstance(backend, Backend):   # a Backend given was looked up by the caller
        backend = get_backend(backend or point.backend)
    dtype, device = dtype or point.dtype, device or point.device
    x, y = (cast(v, backend, dtype, device) for v in (data.x, data.y))
    bound = dict(backend=backend, preflight=preflight)
    if family == "kernel":
        b = cast(data.b, backend, dtype, device)
        return _kernel_op(point, bound, x, y, b, cast(data.c, backend, dtype, device))
    if family == "softmin":
        h = cast(data.h, backend, dtype, device)
        return Prepared(losses.bind_softmin(x, y, h, eps=point.eps, p=point.p, **bound),
                        vector_summary)
    if family == "sinkhorn":
        a, b = (None if w is None else cast(w, backend, dtype, device)
                for w in (getattr(data.clouds, "a", None), getattr(data.clouds, "b", None)))
        return _sinkhorn_op(point, bound, x, y, a, b)
    return _flow_op(point, bound, x, y)


def _kernel_op(point, bound: dict, x, y, b, c) -> Prepared:
    from kpbench import losses

    if not OPS[point.op].grad:
        return Prepared(losses.bind_kernel_product(x, y, b, kernel=point.kernel,
                                                   blur=point.blur, **bound), vector_summary)
    import torch

    x = x.detach().requires_grad_(True)
    forward = losses.bind_kernel_product(x, y, b, kernel=point.kernel, blur=point.blur, **bound)

    def call():
        (grad,) = torch.autograd.grad((forward() * c).sum(), x)
        return grad

    return Prepared(call, vector_summary)


def sinkhorn_options(point) -> dict:
    """The Sinkhorn keywords of ``point`` (scaling and tol: the losses' defaults where unset)."""
    return dict(p=point.p, blur=point.blur, reach=point.reach, iters=point.iters,
                **({"scaling": point.scaling} if point.scaling is not None else {}),
                **({"tol": point.tol} if point.tol is not None else {}))


def _solve_summary(result: SinkhornResult, value: float, vector=None) -> Summary:
    iterations = result.iterations   # None: the peer does not say (POT's debiased solve)
    return Summary(value, vector, None if iterations is None else int(iterations),
                   result.marginal_err, result.converged)


def _sinkhorn_op(point, bound: dict, x, y, a=None, b=None) -> Prepared:
    from kpbench import losses

    grad = OPS[point.op].grad
    if grad:
        x = x.detach().requires_grad_(True)
    forward = losses.bind_sinkhorn(a, x, b, y, options=SinkhornOptions(**sinkhorn_options(point)),
                                   **bound)
    if not grad:
        return Prepared(forward, lambda out: _solve_summary(out, float(out.value)))
    import torch

    def call():
        result = forward()
        (gradient,) = torch.autograd.grad(result.value, x)
        return gradient, result

    def summarize(out):
        vector = to_numpy(out[0]).ravel()
        return _solve_summary(out[1], float(np.linalg.norm(vector)), vector)

    return Prepared(call, summarize)


def flow_loss(point, backend, preflight: bool = True):
    """The loss of a flow_step point, with its parameters bound: loss(a, x, b, y)."""
    params = {"blur": point.blur}
    if point.loss == "sinkhorn":
        params = sinkhorn_options(point)
    elif point.loss == "hausdorff":
        params["p"] = point.p
    elif point.loss == "mmd":
        params["kernel"] = "gaussian"
    elif point.loss == "energy":
        params = {}

    def loss(a, x, b, y):
        from kpbench import losses

        return losses.bind_loss(point.loss, a, x, b, y, backend=backend, preflight=preflight,
                                **params)()

    return loss


def _flow_op(point, bound: dict, x, y) -> Prepared:
    import torch

    from kpbench.reproductions.flows import euler_step

    loss_fn = flow_loss(point, **bound)
    a = torch.full((point.N,), 1.0 / point.N, dtype=x.dtype, device=x.device)
    b = torch.full((point.M,), 1.0 / point.M, dtype=x.dtype, device=x.device)
    return Prepared(lambda: euler_step(loss_fn, x, a, y, b, FLOW_LR),
                    lambda out: Summary(float(out[1])))


# -- references ----------------------------------------------------------------------
def reference(point, data: Data) -> Summary:
    """The float64 truth of ``point`` on the same inputs, from :mod:`kpbench.reference`:
    forward ops from the reference backend (Sinkhorn solved to convergence, whatever
    iteration count or eps-scaling the point used), gradients in closed form (kernel
    products) or from the converged plans (Sinkhorn), flow steps by their loss value.
    ``data`` is ``make_data(point)``; the truth is kept for the points that share it (the
    same problem on other backends, dtypes, iteration counts): a converged float64
    Sinkhorn at N = 1e3 takes tens of seconds."""
    sinkhorn = OPS[point.op].family == "sinkhorn"
    truth = dataclasses.replace(point, backend="numpy", dtype="float64", device="cpu",
                                iters=None if sinkhorn else point.iters,
                                scaling=None if sinkhorn else point.scaling,
                                tol=None if sinkhorn else point.tol)
    # a moved point's inputs are rounded to its dtype: its truth is that dtype's own
    kept = (truth, point.dtype if moved(point) else None)
    if kept not in _TRUTHS:
        if len(_TRUTHS) >= TRUTHS_KEPT:
            _TRUTHS.pop(next(iter(_TRUTHS)))
        _TRUTHS[kept] = _reference_of(truth, data)
    return _TRUTHS[kept]


TRUTHS_KEPT = 16
_TRUTHS: dict = {}


def _reference_of(point, data: Data) -> Summary:
    from kpbench import reference as ref

    point = at_scale(point)
    if point.op == "flow_step":
        return Summary(float(flow_loss(point, "numpy")(None, data.x, None, data.y)))
    if point.op == "kernel_product_grad":
        grad = ref.np_kernel_product_grad(data.x, data.y, data.b, data.c, point.kernel, point.blur)
        return vector_summary(grad)
    if point.op == "sinkhorn_grad":
        a, b = data.weights(point.N, point.M)
        _value, _f, _g, info = ref.np_sinkhorn(a, data.x, b, data.y, p=point.p, blur=point.blur,
                                               reach=point.reach, gradient=True)
        grad = info["grad_x"]
        return Summary(float(np.linalg.norm(grad)), grad.ravel(), int(info["iterations"]),
                       info["marginal_err"], info["converged"])
    prepared = prepare(point, data, "numpy", "float64", "cpu")
    return prepared.summarize(prepared.call())

