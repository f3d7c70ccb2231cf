"""What each sweep op computes, on which inputs, and what it is compared with.

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

Inputs are generated once per point in float64 from the point's data source
(:mod:`kpbench.datasets.sources`; by default x: uniform cube, y: Gaussian blobs, seeded;
a source's weights a, b serve the Sinkhorn ops, uniform otherwise) and cast to the point's dtype/device, so the reference sees the same numbers.
Accuracy points may be moved (``offset``) and magnified (``scale``): see :func:`conditioned`.
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
import functools
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from kpbench.errors import KPBenchError

FLOW_LOSSES = ("sinkhorn", "mmd", "energy", "hausdorff", "log_likelihood")
FLOW_LR = 0.1


@dataclass(frozen=True)
class OpInfo:
    name: str
    family: str            # kernel | softmin | sinkhorn | flow | custom
    grad: bool             # needs autograd
    primitive: str | None  # the backend primitive whose memory the pre-flight estimates


OPS: dict[str, OpInfo] = {
    op.name: op for op in (
        OpInfo("kernel_product", "kernel", False, "kernel_product"),
        OpInfo("kernel_product_grad", "kernel", True, "kernel_product"),
        OpInfo("softmin", "softmin", False, "softmin"),
        OpInfo("sinkhorn", "sinkhorn", False, "softmin"),
        OpInfo("sinkhorn_grad", "sinkhorn", True, "softmin"),
        OpInfo("flow_step", "flow", True, None),
    )
}
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


# -- inputs ----------------------------------------------------------------------
@dataclass
class Data:
    """float64 inputs of one point: clouds x (N, D), y (M, D), signals b, h (M,), c (N,)."""

    x: np.ndarray
    y: np.ndarray
    b: np.ndarray
    h: np.ndarray
    c: np.ndarray
    # kpbench.datasets.sources.Clouds: the source's weights (hashed with the arrays where
    # given) and where x, y came from; not a field: the fields are the generated arrays
    clouds: ClassVar[object] = None

    def weights(self, N: int, M: int) -> tuple[np.ndarray, np.ndarray]:
        """The Sinkhorn weights (a, b): the source's, else uniform."""
        a = getattr(self.clouds, "a", None)
        b = getattr(self.clouds, "b", None)
        return (np.full(N, 1.0 / N) if a is None else a, np.full(M, 1.0 / M) if b is None else b)


def make_data(point) -> Data:
    from kpbench.datasets.sources import make_clouds

    clouds = make_clouds(getattr(point, "data", None), point.N, point.M, point.D, point.seed)
    rng = np.random.default_rng([point.seed, 7])
    data = Data(
        x=clouds.x, y=clouds.y,
        b=rng.uniform(0.5, 1.5, point.M),
        h=np.log(1.0 / point.M) + 0.1 * rng.standard_normal(point.M),
        c=rng.standard_normal(point.N),
    )
    data.clouds = clouds
    return conditioned(point, data)


# -- conditioning (accuracy sweeps: offset, scale) ------------------------------------
# The same problem moved and magnified: x, y -> scale * x + offset * (1, ..., 1), blur and
# reach (distances, as in GeomLoss: rho = reach**p) times scale. Exact relations to the
# unmoved problem: an offset changes nothing; a scale s leaves kernel products unchanged,
# divides their x-gradient by s, multiplies softmin outputs and S_eps by s**p and their
# x-gradient by s**(p-1) (likewise the losses of flow_step: Sinkhorn and hausdorff s**p, gaussian
# MMD unchanged, energy s; its Euler step has a fixed learning rate, so the moved x is not equivalent).
def moved(point) -> bool:
    return point.offset is not None or point.scale is not None


def conditioned(point, data: Data) -> Data:
    """``data`` moved by the point's offset and scale, then every input rounded to the point's
    dtype (kept in float64): the float64 truth sees exactly the numbers the backend gets, so
    ``rel_err`` judges the arithmetic, not the rounding of the coordinates (at offset 500 a
    float32 coordinate is off by up to 3e-5). Unmoved points keep their inputs as they were."""
    if not moved(point):
        return data
    scale = 1.0 if point.scale is None else point.scale
    offset = 0.0 if point.offset is None else point.offset

    def rounded(v: np.ndarray) -> np.ndarray:
        return v.astype(point.dtype).astype(np.float64)

    moved_data = Data(x=rounded(scale * data.x + offset), y=rounded(scale * data.y + offset),
                      b=rounded(data.b), h=rounded(data.h), c=rounded(data.c))
    clouds = data.clouds
    if clouds is not None:   # the source's weights rounded like every other input
        clouds = dataclasses.replace(clouds, **{w: rounded(getattr(clouds, w)) for w in ("a", "b")
                                                if getattr(clouds, w) is not None})
    moved_data.clouds = clouds
    return moved_data


def at_scale(point):
    """``point`` with blur and reach times its scale: what its op computes with. The result's
    scale is None, so that applying this twice (prepare inside the reference) scales once."""
    if point.scale is None:
        return point
    reach = None if point.reach is None else point.reach * point.scale
    return dataclasses.replace(point, blur=point.blur * point.scale, reach=reach, scale=None)


def cast(array: np.ndarray, backend, dtype: str, device: str):
    """``array`` as the backend takes it: numpy for numpy, else a torch tensor on ``device``."""
    if backend.array_module == "numpy":
        return array.astype(dtype)
    import torch

    return torch.as_tensor(array).to(device=device, dtype=getattr(torch, dtype))


# -- outputs ---------------------------------------------------------------------
@dataclass
class Summary:
    """What a call's output is reduced to: a scalar, maybe a vector, maybe iterations,
    and for Sinkhorn how well it solved (``marginal_err``, ``converged``) where known."""

    value: float
    vector: np.ndarray | None = None
    iterations: int | None = None
    marginal_err: float | None = None
    converged: bool | None = None


def _to_numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _vector_summary(out, iterations=None) -> Summary:
    v = _to_numpy(out).ravel()
    return Summary(float(np.linalg.norm(v)), v, iterations)


@dataclass
class Prepared:
    """``call()`` is what is timed; ``summarize(call())`` reduces its output."""

    call: Callable[[], object]
    summarize: Callable[[object], Summary]


# -- the ops -----------------------------------------------------------------------
def prepare(point, data: Data, backend_name: str | None = None, dtype: str | None = None,
            device: str | None = None) -> Prepared:
    """The op of ``point`` on ``data`` (backend/dtype/device default to the point's)."""
    from kpbench.backends import get_backend

    name = backend_name or point.backend
    dtype, device = dtype or point.dtype, device or point.device
    point = at_scale(point)
    family = OPS[point.op].family
    if family == "custom":
        return _CUSTOM_PREPARE[point.op](point, data)
    backend = get_backend(name)
    x, y = (cast(v, backend, dtype, device) for v in (data.x, data.y))
    if family == "kernel":
        b = cast(data.b, backend, dtype, device)
        return _kernel_op(point, name, x, y, b, cast(data.c, backend, dtype, device))
    if family == "softmin":
        return _softmin_op(point, name, x, y, cast(data.h, backend, dtype, device))
    if family == "sinkhorn":
        a, b = (None if w is None else cast(w, backend, dtype, device)
                for w in (getattr(data.clouds, "a", None), getattr(data.clouds, "b", None)))
        return _sinkhorn_op(point, name, x, y, a, b)
    return _flow_op(point, name, x, y)


# Each op binds its computation once (kpbench.losses.bind: backend lookup, conversions,
# validation, memory check): the timed ``call`` runs the computation and nothing else.
def _kernel_op(point, backend: str, x, y, b, c) -> Prepared:
    from kpbench import losses

    if not OPS[point.op].grad:
        forward = losses.bind(losses.kernel_product, x, y, b, kernel=point.kernel,
                              blur=point.blur, backend=backend)
        return Prepared(forward, _vector_summary)
    import torch

    x = x.detach().requires_grad_(True)
    forward = losses.bind(losses.kernel_product, x, y, b, kernel=point.kernel,
                          blur=point.blur, backend=backend)

    def call():
        (grad,) = torch.autograd.grad((forward() * c).sum(), x)
        return grad

    return Prepared(call, _vector_summary)


def _softmin_op(point, backend: str, x, y, h) -> Prepared:
    from kpbench import losses

    return Prepared(losses.bind(losses.softmin, x, y, h, eps=point.eps, p=point.p,
                                backend=backend), _vector_summary)


def _sinkhorn_kwargs(point) -> dict:
    return dict(p=point.p, blur=point.blur, reach=point.reach, iters=point.iters,
                **({"scaling": point.scaling} if point.scaling is not None else {}),
                **({"tol": point.tol} if point.tol is not None else {}))


def _solve_summary(info: dict, value: float, vector=None) -> Summary:
    iterations = info.get("iterations")   # None: the peer does not say (POT's debiased solve)
    return Summary(value, vector, None if iterations is None else int(iterations),
                   info.get("marginal_err"), info.get("converged"))


def _sinkhorn_op(point, backend: str, x, y, a=None, b=None) -> Prepared:
    from kpbench import losses

    grad = OPS[point.op].grad
    if grad:
        x = x.detach().requires_grad_(True)
    forward = losses.bind(losses.sinkhorn, a, x, b, y, backend=backend, return_info=True,
                          **_sinkhorn_kwargs(point))
    if not grad:
        return Prepared(forward, lambda out: _solve_summary(out[1], float(out[0])))
    import torch

    def call():
        value, info = forward()
        (gradient,) = torch.autograd.grad(value, x)
        return gradient, info

    def summarize(out):
        vector = _to_numpy(out[0]).ravel()
        return _solve_summary(out[1], float(np.linalg.norm(vector)), vector)

    return Prepared(call, summarize)


def flow_loss(point, backend: str):
    """The loss of a flow_step point, with its parameters bound: loss(a, x, b, y)."""
    from kpbench import losses

    params = {"blur": point.blur}
    if point.loss == "sinkhorn":
        params = _sinkhorn_kwargs(point)
    elif point.loss == "hausdorff":
        params["p"] = point.p
    elif point.loss == "mmd":
        params["kernel"] = "gaussian"
    elif point.loss == "energy":
        params = {}
    return functools.partial(losses.make_loss(point.loss, **params), backend=backend)


def _flow_op(point, backend: str, x, y) -> Prepared:
    import torch

    from kpbench.reproductions.flows import euler_step

    loss_fn = flow_loss(point, backend)
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
        return _vector_summary(grad)
    if point.op == "sinkhorn_grad":
        a, b = data.weights(point.N, point.M)
        value, _f, _g, info = ref.np_sinkhorn(a, data.x, b, data.y, p=point.p, blur=point.blur,
                                              reach=point.reach, gradient=True)
        return _solve_summary(info, float(np.linalg.norm(info["grad_x"])), info["grad_x"].ravel())
    prepared = prepare(point, data, "numpy", "float64", "cpu")
    return prepared.summarize(prepared.call())


GRAD_FD_MAX_N = 500


def grad_fd_error(point, data: Data) -> float | None:
    """The largest relative error of the point's loss gradient (weights a, b and positions
    x, y, one direction each, autograd on the point's backend/dtype/device) against central
    finite differences of the converged float64 value (:mod:`kpbench.gradcheck`); None
    for ops that are not a differentiated loss, or above GRAD_FD_MAX_N points (eight
    converged float64 solves)."""
    if point.op not in ("sinkhorn_grad", "flow_step") or max(point.N, point.M) > GRAD_FD_MAX_N:
        return None
    from kpbench import losses
    from kpbench.backends import get_backend
    from kpbench.gradcheck import fd_gradient_error

    point = at_scale(point)
    converged = dataclasses.replace(point, iters=None, scaling=None, tol=None)
    if point.op == "sinkhorn_grad":
        loss = functools.partial(losses.sinkhorn, **_sinkhorn_kwargs(point))
        truth = functools.partial(losses.sinkhorn, **_sinkhorn_kwargs(converged))
    else:
        loss, truth = flow_loss(point, point.backend), flow_loss(converged, "numpy")
    x = cast(data.x, get_backend(point.backend), point.dtype, point.device)
    a, b = data.weights(point.N, point.M) if point.op == "sinkhorn_grad" else \
        (np.full(point.N, 1.0 / point.N), np.full(point.M, 1.0 / point.M))
    # unbalanced Sinkhorn's weights may move freely; the other losses compare equal masses
    balanced = not (point.reach is not None and "reach" in op_fields(point.op, point.loss))
    return fd_gradient_error(loss, a, x, b, data.y, backend=point.backend, balanced=balanced,
                             seed=point.seed, reference_loss=truth)


def relative_error(got: Summary, ref: Summary) -> float:
    """|got - ref| / |ref|, with Euclidean norms for vector outputs."""
    if got.vector is not None and ref.vector is not None:
        diff, scale = np.linalg.norm(got.vector - ref.vector), np.linalg.norm(ref.vector)
    else:
        diff, scale = abs(got.value - ref.value), abs(ref.value)
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / scale)
