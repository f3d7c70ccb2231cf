"""The one interface every backend serves, and the input checks they share.

A backend computes two primitives on point clouds x (N, D), y (M, D):

* ``kernel_product(x, y, b, kernel=, blur=)``  ->  out_i = sum_j k(x_i, y_j) b_j
  with b of shape (M,) or (M, K); out has shape (N,) or (N, K).
* ``softmin(x, y, h, eps=, p=)``  ->  out_i = -eps log sum_j exp(h_j - |x_i - y_j|^p / (p eps))
  computed with a stable log-sum-exp; h has shape (M,), out (N,).

Every loss of :mod:`kpbench.losses` is written on top of these two calls; a backend
with losses of its own (the float64 reference, a peer library) lists them in
``own_losses`` and :mod:`kpbench.losses` calls those instead.
Subclasses implement ``_kernel_product`` / ``_softmin``; the public methods check
inputs first so that every backend rejects bad input with the same clear message.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

from kpbench.errors import (  # noqa: F401  (re-exported: the names backends raise)
    BackendUnavailable,
    KPBenchError,
    MemoryBudgetExceeded,
    UnsupportedCombination,
    format_bytes,
)

KERNELS = ("gaussian", "laplacian", "energy")


POWERS = (1, 2)
DTYPES = ("float32", "float64")   # what every backend computes in (float16/bfloat16: none)


@dataclass(frozen=True)
class Capabilities:
    autograd: bool          # gradients flow through torch autograd
    cuda: bool              # can run on a CUDA device
    float32: bool
    float64: bool
    dense: bool             # materialises N x M matrices (memory O(NM))
    primitives: bool = True  # serves kernel_product / softmin (False: a peer with losses only)


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise KPBenchError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def check_number(value, name: str) -> float:
    """A real number as a float; a bool, a string or anything else is refused, not coerced
    (``blur=True`` was read as 1.0, ``tol='1e-3'`` failed deep inside)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KPBenchError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def check_whole(value, name: str, low: int = 1) -> int:
    """A whole number >= ``low`` as an int (2.0 -> 2); 2.7, NaN, strings and bools are refused
    (``iters=2.7`` was run as 2 iterations)."""
    number = check_number(value, name)
    if not math.isfinite(number) or number != int(number) or number < low:
        raise KPBenchError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(number)


def check_flag(value, name: str) -> bool:
    """True or False; ``debias='no'`` was read as True."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):   # numpy's too
        raise KPBenchError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_blur(blur: float, name: str = "blur") -> float:
    value = check_number(blur, name)
    if not math.isfinite(value) or value <= 0:
        raise KPBenchError(f"{name} must be a finite number > 0, got {blur!r}")
    return value


def check_p(p: int) -> int:
    """p as the int 1 or 2 (2.0 -> 2); bools and other values are refused."""
    if isinstance(p, bool) or p not in POWERS:
        raise KPBenchError(f"p must be 1 or 2, got {p!r}")
    return int(p)


def _is_finite(t) -> bool:
    if hasattr(t, "isfinite") and not isinstance(t, type):  # torch.Tensor
        import torch

        return bool(torch.isfinite(t).all())
    import numpy as np

    return bool(np.isfinite(np.asarray(t)).all())


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def check_cloud(x, name: str):
    if len(x.shape) != 2:
        raise KPBenchError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise KPBenchError(f"{name} is an empty point cloud (0 points)")
    if x.shape[1] == 0:
        raise KPBenchError(f"{name} has dimension D=0")
    if not (x.dtype.is_floating_point if hasattr(x.dtype, "is_floating_point")
            else x.dtype.kind == "f"):
        raise KPBenchError(f"{name} must be floating point, got {_dtype_name(x)}")
    if _dtype_name(x) not in DTYPES:
        raise KPBenchError(f"{name} is {_dtype_name(x)}: the backends compute in "
                           f"{' or '.join(DTYPES)} (convert it, e.g. x.float())")
    if not _is_finite(x):
        raise KPBenchError(f"{name} contains NaN or inf")


def check_pair(x, y):
    """Check two clouds: shapes, finiteness, same D, same dtype."""
    check_cloud(x, "x")
    check_cloud(y, "y")
    if x.shape[1] != y.shape[1]:
        raise KPBenchError(
            f"dimension mismatch: x has D={x.shape[1]} but y has D={y.shape[1]}"
        )
    if _dtype_name(x) != _dtype_name(y):
        raise KPBenchError(
            f"dtype mismatch: x is {_dtype_name(x)} but y is {_dtype_name(y)}"
        )


def check_signal(v, n_points: int, cloud: str, name: str, nonnegative: bool = False,
                 allow_minus_inf: bool = False, like=None):
    """Check a per-point signal (weights b, or log-weights h) attached to a cloud.

    Log-weights may be -inf (the log of a zero weight) when ``allow_minus_inf``. With
    ``like`` (the points), the signal must have their dtype and device.
    """
    if like is not None and (_dtype_name(v) != _dtype_name(like)
                             or getattr(v, "device", None) != getattr(like, "device", None)):
        raise KPBenchError(f"{name} must have the dtype and device of the points "
                           f"({_dtype_name(like)}, {getattr(like, 'device', 'cpu')}), got "
                           f"{_dtype_name(v)}, {getattr(v, 'device', 'cpu')}")
    if len(v.shape) not in (1, 2) or v.shape[0] != n_points:
        raise KPBenchError(
            f"{name} must have shape ({n_points},) or ({n_points}, K) to match "
            f"{cloud} with {n_points} points, got shape {tuple(v.shape)}"
        )
    if len(v.shape) == 2 and v.shape[1] == 0:
        raise KPBenchError(f"{name} has zero columns (shape {tuple(v.shape)}): nothing to compute")
    if not (v.dtype.is_floating_point if hasattr(v.dtype, "is_floating_point")
            else v.dtype.kind == "f"):
        raise KPBenchError(f"{name} must be floating point, got {_dtype_name(v)}")
    if _has_nan(v):
        raise KPBenchError(f"{name} contains NaN")
    if bool((v == math.inf).any()) or (not allow_minus_inf and bool((v == -math.inf).any())):
        raise KPBenchError(f"{name} contains inf")
    if nonnegative and bool((v < 0).any()):
        raise KPBenchError(f"{name} has negative entries; weights must be >= 0")


def _has_nan(t) -> bool:
    return bool((t != t).any())


# -- what a dtype can compute ------------------------------------------------------------
def dtype_info(dtype: str):
    """numpy's finfo of a dtype name of DTYPES: tiny (smallest normal), max, eps (resolution)."""
    import numpy as np

    return np.finfo(np.dtype(dtype))


def power(value: float, p: int) -> float:
    """value**p in float64, inf where it overflows (Python's ** raises OverflowError)."""
    try:
        return float(value) ** p
    except OverflowError:
        return math.inf


def extent(x, y) -> float:
    """The diagonal of the bounding box of both clouds, in float64 (inf where float64
    overflows); the largest distance between two of their points is at most this."""
    if hasattr(x, "detach"):   # torch, without a transfer of the clouds
        import torch

        with torch.no_grad():
            low = torch.minimum(x.min(0).values, y.min(0).values).double()
            high = torch.maximum(x.max(0).values, y.max(0).values).double()
            return float(torch.linalg.norm(high - low))
    import numpy as np

    points = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.linalg.norm(points.max(0) - points.min(0)))


def check_distances(diameter: float, dtype: str) -> None:
    """Squared distances of clouds spanning ``diameter`` must be finite in ``dtype``: as
    coordinate differences (KeOps, cdist, the reference) their sum of squares reaches
    diameter^2; the dense expansion |x|^2 + |y|^2 - 2<x, y> of clouds centred on their
    bounding box's midpoint (torch_dense.centred) has no term beyond diameter^2 either."""
    largest = float(dtype_info(dtype).max)
    if not diameter**2 <= largest:
        raise KPBenchError(f"the clouds span {diameter:.3g}: squared distances overflow {dtype} "
                           f"(they reach {diameter**2:.3g}, {dtype}'s largest number is "
                           f"{largest:.3g}); rescale the coordinates")


def check_scale(value: float, what: str, dtype: str) -> None:
    """``value`` (e.g. 2 blur^2, eps = blur^p, rho = reach^p) must be a normal number of
    ``dtype``: 0, a subnormal or an overflow turns the divisions by it into inf / NaN."""
    info = dtype_info(dtype)
    if not float(info.tiny) <= value <= float(info.max):
        raise KPBenchError(f"{what} = {value:.3g} is not a normal {dtype} number (allowed: "
                           f"{float(info.tiny):.3g} to {float(info.max):.3g}); rescale the "
                           "coordinates and the blur together")


def check_kernel_range(x, y, kernel: str, blur: float, dtype: str) -> float:
    """Refuse a kernel product that ``dtype`` cannot compute: squared distances that overflow
    (:func:`check_distances`), or a kernel scale -- 2 blur^2 (gaussian), blur (laplacian) --
    that is not a normal number of the dtype (at blur=1e-200, 2 blur^2 = 0 and
    exp(-0/0) is NaN; at 1e200 Python's blur**2 overflows). Exponents beyond the dtype's
    range are fine: exp(-inf) = 0 is the right kernel value. Returns the clouds' extent."""
    diameter = extent(x, y)
    check_distances(diameter, dtype)
    if kernel == "gaussian":
        check_scale(2 * power(blur, 2), f"2 blur^2 at blur={blur!r} (gaussian kernel)", dtype)
    elif kernel == "laplacian":
        check_scale(blur, "blur (laplacian kernel)", dtype)
    return diameter


class Backend:
    """Base class of all backends; see the module docstring for the contract.

    ``validate=False`` skips the shape/NaN and memory checks: the losses validate
    their inputs and check the memory of their largest call once, then loop without
    a device sync or a /proc read per call.
    """

    name: str = "base"
    capabilities: Capabilities
    array_module: str = "torch"   # "numpy" or "torch": what the primitives take and return
    own_losses: dict = {}         # loss name -> function(bk, a, x, b, y, **params)

    def available(self) -> tuple[bool, str]:
        return True, ""

    def timing_refusal(self) -> str | None:
        """Why speed and memory figures of this backend would mislead (None: they don't),
        e.g. CUDA kernels executed on the host for correctness only."""
        return None

    def computing_dtype(self, x) -> str:
        """The dtype this backend computes in for inputs like ``x`` (a name of DTYPES)."""
        return _dtype_name(x)

    def kernel_range(self, x, y, kernel: str, blur: float) -> float:
        """:func:`check_kernel_range` in this backend's dtype, then what this backend's own
        formulation needs (:meth:`check_scaled_distances`); returns the clouds' extent."""
        dtype = self.computing_dtype(x)
        diameter = check_kernel_range(x, y, kernel, blur, dtype)
        self.check_scaled_distances(diameter, kernel, blur, dtype)
        return diameter

    def check_scaled_distances(self, diameter: float, kernel: str, blur: float,
                               dtype: str) -> None:
        """Refuse what this backend's formulation of the kernel cannot compute beyond
        :func:`check_kernel_range` (the cuda kernels scale coordinates by ~1/blur)."""

    def require_available(self) -> None:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable: {why}")

    # -- the two primitives -------------------------------------------------
    # ``bind_*`` checks everything once and returns the bare computation as a
    # zero-argument callable (what benchmarks time); the plain methods call it at once.
    # ``validate=False`` skips the input and memory checks: for callers that made them;
    # ``preflight=False`` skips the memory check only (a sweep point made its one pre-flight).
    def _require_primitives(self, op: str) -> None:
        if not self.capabilities.primitives:
            raise UnsupportedCombination(f"{self.name} offers losses only, no {op} primitive")

    def bind_kernel_product(self, x, y, b, *, kernel: str, blur: float, validate: bool = True,
                            preflight: bool = True):
        self._require_primitives("kernel_product")
        check_kernel(kernel)
        blur = check_blur(blur)
        if validate:
            check_pair(x, y)
            check_signal(b, y.shape[0], "y", "b", like=x)
            self.kernel_range(x, y, kernel, blur)
        if validate and preflight:
            self.check_memory("kernel_product", x.shape[0], y.shape[0], x.shape[1], x,
                              K=_columns(b))
        return functools.partial(self._kernel_product, x, y, b, kernel=kernel, blur=blur)

    def bind_softmin(self, x, y, h, *, eps: float, p: int, validate: bool = True,
                     preflight: bool = True):
        self._require_primitives("softmin")
        eps = check_blur(eps, "eps")
        p = check_p(p)
        if validate:
            check_pair(x, y)
            if len(h.shape) != 1:
                raise KPBenchError(f"h must have shape ({y.shape[0]},), got {tuple(h.shape)}")
            check_signal(h, y.shape[0], "y", "h", allow_minus_inf=True, like=x)
        if validate and preflight:
            self.check_memory("softmin", x.shape[0], y.shape[0], x.shape[1], x)
        return functools.partial(self._softmin, x, y, h, eps=eps, p=p)

    def kernel_product(self, x, y, b, *, kernel: str, blur: float, validate: bool = True):
        return self.bind_kernel_product(x, y, b, kernel=kernel, blur=blur, validate=validate)()

    def softmin(self, x, y, h, *, eps: float, p: int, validate: bool = True):
        return self.bind_softmin(x, y, h, eps=eps, p=p, validate=validate)()

    def prepare_pair(self, x, y, p: int, reuse: "Pair | None" = None) -> "Pair":
        """The work that depends only on the two clouds, done once for many softmins
        between them (see :class:`Pair`); inputs are assumed validated. ``reuse``: a pair
        of the same solve whose scratch memory this one may share (they never run at once)."""
        return Pair(self, x, y, check_p(p))

    def _kernel_product(self, x, y, b, *, kernel: str, blur: float):
        raise NotImplementedError

    def _softmin(self, x, y, h, *, eps: float, p: int):
        raise NotImplementedError

    # -- memory -------------------------------------------------------------
    def memory_estimate(self, op: str, N: int, M: int, D: int, itemsize: int,
                        grad: bool = False) -> int:
        """Peak bytes one primitive call needs beyond its inputs (0 = O(N+M)). A kernel
        product whose b has K > 1 columns is asked with ``columns=K`` as well."""
        return 0

    def memory_budget(self, device: str) -> int | None:
        """Bytes a dense computation may use on ``device``; None = no limit."""
        return None

    def check_memory(self, op: str, N: int, M: int, D: int, like, K: int = 1) -> None:
        if not self.capabilities.dense:
            return
        itemsize = _itemsize(like)
        grad = bool(getattr(like, "requires_grad", False))
        extra = {} if K == 1 else {"columns": K}
        estimate = self.memory_estimate(op, N, M, D, itemsize, grad=grad, **extra)
        budget = self.memory_budget(_device_of(like))
        if budget is not None and estimate > budget:
            shape = "" if K == 1 else f", K={K}"
            raise MemoryBudgetExceeded(
                f"{self.name} {op} at N={N}, M={M}, D={D}{shape}", estimate, budget
            )

    def __repr__(self) -> str:
        return f"<kpbench backend {self.name}>"


class Pair:
    """Softmins between two fixed clouds x (N, D), y (M, D) for one cost |x - y|^p / p.

    ``softmin(h, eps)`` is ``softmin(x, y, h)`` (out on x, h on y) and ``softmin_t(h, eps)``
    is ``softmin(y, x, h)`` (out on y, h on x), differentiable like the primitive. This
    generic version calls the backend's primitive each time; a backend overrides
    :meth:`Backend.prepare_pair` to reuse what depends only on the clouds (the dense
    cost matrix, a compiled KeOps reduction and contiguous copies).
    """

    def __init__(self, bk, x, y, p: int):
        self.bk, self.x, self.y, self.p = bk, x, y, p

    def softmin(self, h, eps: float):
        return self.bk.softmin(self.x, self.y, h, eps=eps, p=self.p, validate=False)

    def softmin_t(self, h, eps: float):
        return self.bk.softmin(self.y, self.x, h, eps=eps, p=self.p, validate=False)


def _columns(b) -> int:
    return int(b.shape[1]) if len(b.shape) == 2 else 1


def _itemsize(t) -> int:
    size = getattr(t, "itemsize", None)
    if size is None:
        size = t.element_size()
    return int(size)


def _device_of(t) -> str:
    device = getattr(t, "device", "cpu")
    return str(device) if str(device) != "cpu" else "cpu"
