"""Which primitive each loss is written on, and what a dense backend's memory estimate is
asked for it: the one table that :mod:`kpbench.losses` (its memory check),
:mod:`kpbench.backends.auto` (calibration entries) and the sweep's pre-flight read.

``memory_op``: the loss's largest primitive call (at the N x N / M x M size of the self
terms), or the loss itself where the backend keeps prepared pairs for a whole solve
(Sinkhorn, Hausdorff: their cost matrices).
"""
from __future__ import annotations

from typing import NamedTuple


class LossCalls(NamedTuple):
    primitive: str    # the primitive the loss is written on (auto's calibration entries)
    memory_op: str    # what Backend.memory_estimate is asked for the loss


LOSS_CALLS = {
    "mmd": LossCalls("kernel_product", "kernel_product"),
    "energy": LossCalls("kernel_product", "kernel_product"),
    "sinkhorn_multiplicative": LossCalls("kernel_product", "kernel_product"),
    "hausdorff": LossCalls("softmin", "hausdorff"),
    "log_likelihood": LossCalls("softmin", "softmin"),
    "sinkhorn": LossCalls("softmin", "sinkhorn"),
}
# a differentiated loss made of primitive calls keeps the buffers of all of them for the
# backward (MMD: three, plus one running); the pair estimates (Sinkhorn, Hausdorff) count theirs
CALLS_KEPT_FOR_BACKWARD = 4


def memory_op(loss: str) -> str:
    """What a dense backend's memory_estimate is asked for loss ``loss``."""
    return LOSS_CALLS[loss].memory_op


def primitive_of(loss: str) -> str | None:
    """The primitive ``loss`` is written on (None: not a loss of the table)."""
    calls = LOSS_CALLS.get(loss)
    return calls.primitive if calls else None
