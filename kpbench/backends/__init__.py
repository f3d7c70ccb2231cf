"""Backend registry: ``get_backend(name)`` returns a ready backend or says why not."""
from __future__ import annotations

import importlib
import os

from .base import (
    Backend,
    BackendUnavailable,
    Capabilities,
    KPBenchError,
    MemoryBudgetExceeded,
)

# name -> "module:Class"; modules are imported lazily so that a missing optional
# dependency (pykeops, a CUDA toolchain) only matters to the backend that needs it.
_REGISTRY = {
    "numpy": "kpbench.backends.numpy_ref:NumpyBackend",
    "torch": "kpbench.backends.torch_dense:TorchBackend",
    "keops": "kpbench.backends.keops:KeOpsBackend",
    "cuda": "kpbench.backends.cuda:CudaBackend",
}
_INSTANCES: dict[str, Backend] = {}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def register_backend(name: str, target: str) -> None:
    """Add a backend given as "module:Class" (used by tests and plugins)."""
    _REGISTRY[name] = target
    _INSTANCES.pop(name, None)


def _instantiate(name: str) -> Backend:
    if name not in _INSTANCES:
        module_name, cls_name = _REGISTRY[name].split(":")
        module = importlib.import_module(module_name)
        instance = getattr(module, cls_name)()
        instance.slowdown_s = _test_slowdown().get(name, 0.0)
        _INSTANCES[name] = instance
    return _INSTANCES[name]


def _test_slowdown() -> dict[str, float]:
    """KPBENCH_TEST_SLOWDOWN="torch=0.05,keops=0.1": a deliberate delay per primitive
    call, to show that regression tracking catches a slowed backend."""
    spec = os.environ.get("KPBENCH_TEST_SLOWDOWN", "").strip()
    if not spec:
        return {}
    delays = {}
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        try:
            delays[name.strip()] = float(seconds)
        except ValueError:
            raise KPBenchError(f"KPBENCH_TEST_SLOWDOWN: bad entry {item!r}; use name=seconds") from None
    return delays


def availability() -> dict[str, tuple[bool, str]]:
    """Every registered backend -> (available, reason if not)."""
    result = {}
    for name in _REGISTRY:
        try:
            result[name] = _instantiate(name).available()
        except Exception as exc:  # an import error is a reason, not a crash
            result[name] = (False, f"{type(exc).__name__}: {exc}")
    return result


def available_backends() -> list[str]:
    return [name for name, (ok, _) in availability().items() if ok]


def get_backend(backend: str | Backend) -> Backend:
    """The backend called ``backend`` (or the object itself), checked available."""
    if isinstance(backend, Backend):
        backend.require_available()
        return backend
    if backend not in _REGISTRY:
        raise KPBenchError(
            f"unknown backend {backend!r}; known backends: {', '.join(_REGISTRY)} "
            f"(available here: {', '.join(available_backends()) or 'none'})"
        )
    ok, why = availability()[backend]
    if not ok:
        raise BackendUnavailable(
            f"backend {backend!r} is unavailable: {why} "
            f"(available here: {', '.join(available_backends()) or 'none'})"
        )
    return _instantiate(backend)


__all__ = [
    "Backend", "BackendUnavailable", "Capabilities", "KPBenchError", "MemoryBudgetExceeded",
    "available_backends", "availability", "backend_names", "get_backend", "register_backend",
]
