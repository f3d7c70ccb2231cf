"""A test-side backend: dense torch with every primitive call 1.3 times as long.

Registered *under the name "torch"* (``register_backend("torch", "slowed_backend:...")``) for
one sweep, so that its rows have the same point keys as a normal torch sweep and
``kpbench compare`` can match them: a deliberate regression of one backend.
"""
from __future__ import annotations

import time

from kpbench.backends.torch_dense import TorchBackend

SLOWDOWN = 1.3
TORCH_TARGET = "kpbench.backends.torch_dense:TorchBackend"
SLOWED_TARGET = "slowed_backend:SlowedTorchBackend"


class SlowedTorchBackend(TorchBackend):
    """Computes as torch does, then spins for (SLOWDOWN - 1) times the time the call took
    (a busy wait: precise at tens of microseconds, where sleep is not)."""

    def _kernel_product(self, *args, **kwargs):
        return _slowed(super()._kernel_product, *args, **kwargs)

    def _softmin(self, *args, **kwargs):
        return _slowed(super()._softmin, *args, **kwargs)


def _slowed(call, *args, **kwargs):
    start = time.perf_counter()
    out = call(*args, **kwargs)
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + (SLOWDOWN - 1) * elapsed
    while time.perf_counter() < deadline:
        pass
    return out
