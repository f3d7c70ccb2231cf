"""A kpbench plugin that slows backends down on purpose, to show that regression
tracking catches it: ``KPBENCH_SLOWDOWN="torch=1.3"`` re-registers the backend
``torch`` (same name, so its rows keep their keys) with every primitive call taking
1.3 times as long (it sleeps 0.3 times the call's own duration after it).
"""
import os
import time

from kpbench.backends import register_backend
from kpbench.backends.torch_dense import TorchBackend


def _factors() -> dict[str, float]:
    spec = os.environ.get("KPBENCH_SLOWDOWN", "")
    items = (item.partition("=") for item in spec.split(",") if item.strip())
    return {name.strip(): float(factor) for name, _, factor in items}


def _slowed(call, factor: float):
    def slow(*args, **kwargs):
        start = time.perf_counter()
        out = call(*args, **kwargs)
        time.sleep((factor - 1) * (time.perf_counter() - start))
        return out

    return slow


class SlowTorchBackend(TorchBackend):
    def __init__(self):
        factor = _factors().get("torch", 1.0)
        self._kernel_product = _slowed(super()._kernel_product, factor)
        self._softmin = _slowed(super()._softmin, factor)


if "torch" in _factors():
    register_backend("torch", f"{__name__}:SlowTorchBackend")
