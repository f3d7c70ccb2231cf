"""What the peer backends share: availability of a package, the loss-only capabilities."""
from __future__ import annotations

import importlib

from kpbench.backends.base import Backend
from kpbench.errors import UnsupportedCombination


def package_available(module: str, extra: str = "peers") -> tuple[bool, str]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return False, f"{module} not installed (pip install 'kpbench[{extra}]'): {exc}"
    return True, ""


def refuse(condition: bool, backend: Backend, what: str) -> None:
    """UnsupportedCombination("<backend> does not support <what>") when ``condition``."""
    if condition:
        raise UnsupportedCombination(f"{backend.name} does not support {what}")


class DenseMemory:
    """The memory pre-flight of a dense peer (one that materialises N x M matrices): peak
    bytes = BUFFERS[grad] x N x M x itemsize, against the dense torch backend's budget.
    :func:`kpbench.losses._bound` asks it before the peer's own loss runs (unless the
    caller made it), as :func:`kpbench.bench.measure.point.preflight` does before a sweep point (N = M = the
    larger cloud). BUFFERS come from peak RSS measured by ``scripts/peer_memory.py``."""

    BUFFERS: dict = {}   # {False: forward, True: with backward}

    def memory_estimate(self, op, N, M, D, itemsize, grad=False):
        return int(self.BUFFERS[bool(grad)] * N * M * itemsize)

    def memory_budget(self, device):
        from kpbench.backends.torch_dense import TorchBackend

        return TorchBackend().memory_budget(device)
