"""The exceptions of kpbench, in one place every layer may import (it imports nothing)."""
from __future__ import annotations


class KPBenchError(ValueError):
    """Bad input: a shape, value or option that would give a wrong number."""


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why (e.g. 'no CUDA device').

    ``retryable``, on every refusal (this class, its subclass and MemoryBudgetExceeded):
    whether it depends on this machine or this moment, so that another machine or a later
    run may measure the point (sweeps store it; ``--retry-failed`` redoes those rows)."""

    retryable = True


class UnsupportedCombination(BackendUnavailable):
    """The backend runs here, but not this op or these options (a peer without ``tol``,
    a loss-only peer asked for a primitive, a dtype it lacks); sweeps record it as
    ``unsupported``, not retryable: no other machine would run it."""

    retryable = False


class MemoryBudgetExceeded(MemoryError):
    """A dense computation refused before it would exhaust memory. ``retryable``: the
    budget came from the free memory of the moment (a backend's own), not from a number
    the user gave (``--memory-budget``), which would refuse it again."""

    def __init__(self, what: str, estimate_bytes: int, budget_bytes: int, *,
                 retryable: bool = True, message: str | None = None):
        self.estimate_bytes = int(estimate_bytes)
        self.budget_bytes = int(budget_bytes)
        self.retryable = retryable
        super().__init__(message or (
            f"{what} needs an estimated {format_bytes(estimate_bytes)} "
            f"but the memory budget is {format_bytes(budget_bytes)}"
        ))


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units; whole bytes below 1 KiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    raise AssertionError("unreachable")
