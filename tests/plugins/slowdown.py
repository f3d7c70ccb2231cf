"""A kpbench plugin that slows backends down on purpose, to show that regression
tracking catches it: ``KPBENCH_SLOWDOWN="torch=1.3"`` re-registers the backend
``torch`` (same name, so its rows keep their keys) with every primitive call taking
1.3 times as long (it spins for 0.3 times the call's own duration after it).
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
        # a busy wait: time.sleep overshoots by its wake-up latency (0.1 to several ms on a
        # loaded machine), which would turn a 1.3x slowdown of a 1 ms call into 2-4x
        deadline = time.perf_counter() + (factor - 1) * (time.perf_counter() - start)
        while time.perf_counter() < deadline:
            pass
        return out

    return slow


class SlowTorchBackend(TorchBackend):
    def __init__(self):
        factor = _factors().get("torch", 1.0)
        self._kernel_product = _slowed(super()._kernel_product, factor)
        self._softmin = _slowed(super()._softmin, factor)


if "torch" in _factors():
    register_backend("torch", f"{__name__}:SlowTorchBackend")
