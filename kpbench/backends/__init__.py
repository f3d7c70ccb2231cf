"""Backend registry: ``get_backend(name)`` returns a ready backend or says why not."""
from __future__ import annotations

import importlib

from kpbench.errors import BackendUnavailable, KPBenchError, MemoryBudgetExceeded

from .base import Backend, Capabilities

# name -> "module:Class"; modules are imported lazily so that a missing optional
# dependency (pykeops, a CUDA toolchain) only matters to the backend that needs it.
_REGISTRY = {
    "numpy": "kpbench.reference:NumpyBackend",
    "torch": "kpbench.backends.torch_dense:TorchBackend",
    "keops": "kpbench.backends.keops:KeOpsBackend",
    "cuda": "kpbench.backends.cuda:CudaBackend",
    # peers (extra "peers"): loss-level only, see kpbench.peers
    "geomloss-tensorized": "kpbench.peers.geomloss:GeomLossTensorized",
    "geomloss-online": "kpbench.peers.geomloss:GeomLossOnline",
    "geomloss-multiscale": "kpbench.peers.geomloss:GeomLossMultiscale",
    "pot": "kpbench.peers.pot:PotBackend",
    "ott": "kpbench.peers.ott:OttBackend",
    "ott-online": "kpbench.peers.ott:OttOnline",
    "flash-sinkhorn": "kpbench.peers.flash_sinkhorn:FlashSinkhorn",
    "flash-sinkhorn-no-tf32": "kpbench.peers.flash_sinkhorn:FlashSinkhornNoTF32",
}
_INSTANCES: dict[str, Backend] = {}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def register_backend(name: str, target: str) -> None:
    """Add (or replace) a backend given as "module:Class" (see :mod:`kpbench.plugins`)."""
    _REGISTRY[name] = target
    _INSTANCES.pop(name, None)


def _instantiate(name: str) -> Backend:
    if name not in _INSTANCES:
        module_name, cls_name = _REGISTRY[name].split(":")
        module = importlib.import_module(module_name)
        _INSTANCES[name] = getattr(module, cls_name)()
    return _INSTANCES[name]


def _availability(name: str) -> tuple[bool, str]:
    try:
        return _instantiate(name).available()
    except Exception as exc:  # an import error is a reason, not a crash
        return False, f"{type(exc).__name__}: {exc}"


def availability() -> dict[str, tuple[bool, str]]:
    """Every registered backend -> (available, reason if not)."""
    return {name: _availability(name) for name in _REGISTRY}


def available_backends() -> list[str]:
    return [name for name, (ok, _) in availability().items() if ok]


def get_backend(backend: str | Backend, *, op: str | None = None, N: int | None = None,
                M: int | None = None, D: int | None = None, dtype: str | None = None,
                device: str | None = None) -> Backend:
    """The backend called ``backend`` (or the object itself), checked available.

    ``"auto"`` picks the fastest for the problem given by the keywords, from this
    machine's calibration (see :mod:`kpbench.backends.auto`); other names ignore them."""
    if backend == "auto":
        from .auto import resolve

        return resolve(op=op, N=N, M=M, D=D, dtype=dtype, device=device)
    if isinstance(backend, Backend):
        backend.require_available()
        return backend
    if backend not in _REGISTRY:
        raise KPBenchError(
            f"unknown backend {backend!r}; known backends: {', '.join(_REGISTRY)} "
            f"(available here: {', '.join(available_backends()) or 'none'})"
        )
    ok, why = _availability(backend)
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
