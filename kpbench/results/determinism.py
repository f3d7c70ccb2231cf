"""Which points are bit-reproducible across runs on one machine, and what tolerance applies.

Measured by ``scripts/determinism.py`` (two runs in two fresh processes, same machine,
same inputs, every op of the sweeps; max difference of the outputs per backend, dtype and
device). The table below holds what it found; a (backend, device) pair not measured
is *not* claimed deterministic (``False``): a claim needs a measurement.

Why the CPU entries are what they are:

* ``numpy`` (float64 reference): chunked NumPy, a fixed reduction order per chunk size,
  BLAS with the process's fixed thread count: bit-identical run to run.
* ``torch`` CPU with a fixed ``torch.set_num_threads`` (the sweep always sets it): the
  reductions' split over threads is fixed, so bit-identical. Another thread count
  changes the split and the last bits (see the script's "threads 1 vs 2" line).
* ``keops`` CPU: one OpenMP thread per output row, each reducing its row sequentially:
  the order does not depend on scheduling, so bit-identical with fixed flags (other
  ``CXXFLAGS``, e.g. ``-ffast-math``, are another build and another result).
* CUDA (torch, keops, the custom kernels): not measured here (no GPU on the machine that
  made this table), so not claimed.

:func:`tolerance` is what two runs of a point may differ by in ``value`` (relative):
deterministic points on one machine should agree to the bit, across machines, commits
and libraries to a few ulps of the dtype amplified by the algorithm; others get more.
"""
from __future__ import annotations

MEASURED_BY = "scripts/determinism.py"

# (backend, device) -> {dtype: bit-reproducible across runs on one machine}
DETERMINISTIC: dict[tuple[str, str], dict[str, bool]] = {
    ("numpy", "cpu"): {"float64": True},
    ("torch", "cpu"): {"float32": True, "float64": True},
    ("keops", "cpu"): {"float32": True, "float64": True},
}

# relative tolerance on a point's value between two runs: (deterministic, dtype) -> rtol
TOLERANCES = {
    (True, "float64"): 1e-10,
    (True, "float32"): 1e-4,
    (False, "float64"): 1e-8,
    (False, "float32"): 1e-3,
}


def deterministic(backend: str, dtype: str, device: str) -> bool:
    """Whether ``backend`` in ``dtype`` on ``device`` gives the same bits run after run here."""
    return DETERMINISTIC.get((backend, _device_kind(device)), {}).get(dtype, False)


def tolerance(dtype: str, is_deterministic: bool | None) -> float:
    """Relative tolerance on ``value`` for two runs of one point (unknown: not deterministic)."""
    return TOLERANCES.get((bool(is_deterministic), dtype), TOLERANCES[(False, "float32")])


def _device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


__all__ = ["deterministic", "tolerance", "DETERMINISTIC", "TOLERANCES"]
