"""Measure one sweep point: speed, peak memory or accuracy; never lose the row.

:func:`run_point` looks the backend up ONCE and hands the Backend object on; before any
data is made it asks whether the backend supports this point here (:func:`check_supported`)
and computes the dense estimate once, which the ONE memory pre-flight (:func:`preflight`)
holds against the budget; every refusal becomes its row through ONE mapping
(:meth:`Refusal.of`: status, reason, retryable). Then it makes the inputs, binds the op
without a second memory check, and measures (:mod:`.timing`, :mod:`.memory`,
:mod:`.accuracy`). It returns the point's row (POINT_COLUMNS + results + host metadata)
whatever happens; the status says what did:

* ``ok``; ``oom``: torch.cuda.OutOfMemoryError or MemoryError during the run;
* ``unsupported``: the backend lacks the dtype, the device, autograd, or is unavailable
  here (BackendUnavailable, with its reason);
* ``skipped``: refused before running because a dense backend's memory estimate exceeds
  the budget (the user's ``memory_budget``, which replaces the backend's own; else the
  backend's own, from the free memory of the moment), or the backend refused itself
  (MemoryBudgetExceeded); the error text gives the estimate;
* ``error``: any other exception, as "Type: message".
``retryable``: the refusal's own (kpbench.errors: whether it depends on this machine or
this moment); failures during the run are retryable. Timeouts and crashed workers are
recorded by the executors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from kpbench import plugins
from kpbench.backends.determinism import deterministic
from kpbench.backends.losses_table import CALLS_KEPT_FOR_BACKWARD
from kpbench.bench import ops
from kpbench.bench.inputs import make_data
from kpbench.bench.settings import Settings
from kpbench.errors import (BackendUnavailable, MemoryBudgetExceeded, UnsupportedCombination,
                            format_bytes)
from kpbench.results.fingerprint import input_hash
from kpbench.results.meta import host_metadata

from .accuracy import measure_accuracy
from .memory import is_cuda_oom, measure_memory, release_cuda_cache
from .threads import pin_threads, thread_report
from .timing import cuda_available, measure_speed

ERROR_MAX_CHARS = 2000
INT64_MAX = 2**63 - 1        # the largest value of the store's integer columns


@dataclass(frozen=True)
class Refusal:
    """Why a point is not measured here: its row's status, error text and retryable."""

    status: str       # unsupported | skipped
    reason: str
    retryable: bool

    @classmethod
    def of(cls, exc: BackendUnavailable | MemoryBudgetExceeded) -> Refusal:
        status = "skipped" if isinstance(exc, MemoryBudgetExceeded) else "unsupported"
        return cls(status, str(exc), bool(exc.retryable))

    def row(self) -> dict:
        return dict(status=self.status, error=self.reason, retryable=self.retryable)


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_MAX_CHARS else text[:ERROR_MAX_CHARS] + " [...]"


def base_row(point, kind: str) -> dict:
    row = point.as_row()
    row.update(key=point.key(kind), eps=point.eps)
    return row


def run_point(point, kind: str, settings: Settings = Settings()) -> dict:
    """The row of ``point`` measured for ``kind`` (speed | memory | accuracy)."""
    plugins.load(settings.plugins)
    row = base_row(point, kind)
    row.update(host_metadata())
    row["deterministic"] = deterministic(point.backend, point.dtype, point.device)
    try:
        if settings.threads:
            pin_threads(settings.threads)
        backend = None
        if ops.OPS[point.op].family != "custom":
            from kpbench.backends import get_backend

            backend = get_backend(point.backend)   # the one lookup of the point
            check_supported(point, backend, kind)
            estimate = dense_estimate(point, backend)
            row.update(backend_facts(backend, estimate))
            preflight(point, backend, estimate, settings.memory_budget)   # before any data
        row.update(_measured(point, backend, kind, settings))
        row["status"] = "ok"
    except (BackendUnavailable, MemoryBudgetExceeded) as exc:   # refused before; or in the run
        row.update(Refusal.of(exc).row())
    except MemoryError as exc:
        row.update(status="oom", error=error_text(exc), retryable=True)
    except Exception as exc:
        row.update(status="oom" if is_cuda_oom(exc) else "error", error=error_text(exc),
                   retryable=True)
    finally:
        release_cuda_cache(point)
    return row


def _measured(point, backend, kind: str, settings) -> dict:
    """The inputs made, the op bound (no second pre-flight) and measured."""
    data = make_data(point)
    clouds = data.clouds
    weights = [w for w in (clouds.a, clouds.b) if w is not None]
    measured = dict(data_hash=clouds.file_hash, data_size_bytes=clouds.file_size,
                    data_replaced=clouds.replaced,
                    input_hash=input_hash([data.x, data.y, data.b, data.h, data.c, *weights],
                                          point.dtype))
    prepared = ops.prepare(point, data, backend, preflight=False)
    if kind == "speed":
        measured.update(measure_speed(point, prepared, settings))
    elif kind == "memory":
        measured.update(measure_memory(point, prepared, settings))
    else:
        measured.update(measure_accuracy(point, backend, prepared, data))
    measured.update(thread_report())
    return measured


def backend_facts(backend, estimate: int | None) -> dict:
    """The row's record of the backend: its own settings, the dense memory estimate (null
    past int64: a refusal's text gives it)."""
    return dict(backend_settings=backend_settings(backend),
                mem_estimate_bytes=estimate if estimate is None or estimate <= INT64_MAX
                else None)


def backend_settings(backend) -> str | None:
    """The backend's own settings (a peer's library, version, stopping rule...) as JSON."""
    settings = getattr(backend, "settings", None)
    return json.dumps(settings(), sort_keys=True, default=str) if settings else None


# -- before running: support, then the one memory pre-flight (refusals: Refusal.of) --
def check_supported(point, backend, kind: str = "accuracy") -> None:
    """UnsupportedCombination (by design) or BackendUnavailable (not on this machine)."""
    name = point.backend
    refused = backend.timing_refusal() if kind in ("speed", "memory") else None
    if refused:   # e.g. CUDA kernels executed on the host: right numbers, no GPU timings
        raise UnsupportedCombination(f"backend {name!r}: {refused}")
    caps, info = backend.capabilities, ops.OPS[point.op]
    if not getattr(caps, point.dtype):
        raise UnsupportedCombination(f"backend {name!r} does not support {point.dtype}")
    if info.grad and not caps.autograd:
        raise UnsupportedCombination(f"backend {name!r} has no autograd (op {point.op})")
    if not caps.primitives and info.family in ("kernel", "softmin"):
        raise UnsupportedCombination(f"backend {name!r} serves losses only (no {point.op})")
    if point.device == "cuda":
        if not caps.cuda:
            raise UnsupportedCombination(f"backend {name!r} does not run on CUDA")
        if not cuda_available():
            raise BackendUnavailable("device cuda requested but no CUDA device is visible here")


def dense_estimate(point, backend) -> int | None:
    """Bytes of the point's computation on a dense backend (None: not dense): for a loss,
    what the backend estimates for that loss (Sinkhorn and Hausdorff: the cost matrices
    its solve caches, N = M = the larger cloud for the self problems)."""
    if not backend.capabilities.dense:
        return None
    info = ops.OPS[point.op]
    itemsize = np.dtype(point.dtype).itemsize
    op = ops.memory_op(point.op, point.loss)
    if info.primitive:
        return int(backend.memory_estimate(op, point.N, point.M, point.D, itemsize,
                                           grad=info.grad))
    size = max(point.N, point.M)
    estimate = backend.memory_estimate(op, size, size, point.D, itemsize, grad=info.grad)
    # a differentiated loss made of primitive calls keeps the buffers of all of them for
    # the backward (MMD: three); Sinkhorn's and Hausdorff's estimates count theirs
    kept = CALLS_KEPT_FOR_BACKWARD if info.grad and op in ("kernel_product", "softmin") else 1
    return int(estimate * kept)


def preflight(point, backend, estimate: int | None, budget: int | None) -> None:
    """The one memory pre-flight: MemoryBudgetExceeded when the dense estimate exceeds the
    budget. ``budget``: the user's, which replaces the backend's own (and refuses again
    on any machine: not retryable); None: the backend's, from the free memory of the
    moment (retryable)."""
    if estimate is None:
        return
    retryable = budget is None
    if budget is None:
        budget = backend.memory_budget(point.device)
    if budget is not None and estimate > budget:
        raise MemoryBudgetExceeded(
            point.backend, estimate, budget, retryable=retryable, message=(
                f"pre-flight: {point.backend} {point.op} at N={point.N}, M={point.M} needs an "
                f"estimated {format_bytes(estimate)} ({estimate} bytes), over the memory "
                f"budget of {format_bytes(budget)}"))
