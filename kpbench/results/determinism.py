"""Which points are bit-reproducible across runs on one machine, and what tolerance applies.

Measured by ``scripts/determinism.py`` (two runs in two fresh processes, same machine,
same inputs, every op of the sweeps; max difference of the outputs per backend, dtype and
device). The table below holds what it found; a (backend, device) pair not measured
is *not* claimed deterministic (``False``): a claim needs a measurement.

Measured 2026-12-02 on the 2-core AMD EPYC host CPU (torch 2.13 CPU, pykeops 2.3, NumPy
2.4 with OpenBLAS 0.3.31), N = M = 500 and 2000, D = 3, kernel product (+grad), softmin,
Sinkhorn to convergence (+grad): runs A and B (2 threads each) agree to the bit for
numpy float64, torch float32/float64 and keops float32/float64 (max difference 0).
With 1 thread instead of 2, torch and keops still give the same bits; numpy float64
moves by 5.3e-16 relative at N = 2000 (OpenBLAS splits its products over threads).

Why the CPU entries are what they are:

* ``numpy`` (float64 reference): chunked NumPy, a fixed reduction order per chunk size,
  BLAS with the process's thread count: bit-identical run to run with the same count.
* ``torch`` CPU with a fixed ``torch.set_num_threads`` (the sweep always sets it): the
  reductions' split over threads is fixed, so bit-identical. Another thread count
  changes the split and the last bits (see the script's "threads 1 vs 2" line).
* ``keops`` CPU: one OpenMP thread per output row, each reducing its row sequentially:
  the order does not depend on scheduling, so bit-identical with fixed flags (other
  ``CXXFLAGS``, e.g. ``-ffast-math``, are another build and another result).
* CUDA (torch, keops, the custom kernels): not measured here (no GPU on the machine that
  made this table), so not claimed.

:func:`tolerance` is what two runs of a point may differ by in ``value`` (relative):
deterministic points on one host agree to the bit (0); across machines, commits and
libraries the summation order changes, so the dtype's round-off, amplified by the op
(a Sinkhorn solve to a tolerance may stop one iteration earlier): 1e-9 in float64,
1e-4 in float32; points not known to be deterministic get 10x more.
:func:`value_changes` lists the points of two runs whose values moved beyond it.
"""
from __future__ import annotations

import math

MEASURED_BY = "scripts/determinism.py"

# (backend, device) -> {dtype: bit-reproducible across runs on one machine}
DETERMINISTIC: dict[tuple[str, str], dict[str, bool]] = {
    ("numpy", "cpu"): {"float64": True},
    ("torch", "cpu"): {"float32": True, "float64": True},
    ("keops", "cpu"): {"float32": True, "float64": True},
}

# relative tolerance on a point's value between two runs: (deterministic, dtype) -> rtol
TOLERANCES = {
    (True, "float64"): 1e-9,
    (True, "float32"): 1e-4,
    (False, "float64"): 1e-8,
    (False, "float32"): 1e-3,
}


def deterministic(backend: str, dtype: str, device: str) -> bool:
    """Whether ``backend`` in ``dtype`` on ``device`` gives the same bits run after run here."""
    return DETERMINISTIC.get((backend, _device_kind(device)), {}).get(dtype, False)


def tolerance(dtype: str, is_deterministic: bool | None, same_host: bool = False) -> float:
    """Relative tolerance on ``value`` for two runs of one point (unknown: not deterministic);
    0 for a deterministic point run twice on the same host (the same bits are expected)."""
    if is_deterministic and same_host:
        return 0.0
    return TOLERANCES.get((bool(is_deterministic), dtype), TOLERANCES[(False, "float32")])


def value_changes(base, new, limit: int = 10) -> list[str]:
    """Lines naming the points (ok on both sides, same key) whose ``value`` moved by more
    than :func:`tolerance`; a summary line first when anything was compared."""
    from kpbench.results.format import point_label

    pairs = _ok_pairs(base, new)
    if not pairs:
        return []
    moved = []
    for b, n in pairs:
        same = bool(b.get("host")) and b.get("host") == n.get("host")
        both = _true(b.get("deterministic")) and _true(n.get("deterministic"))
        rtol = tolerance(b["dtype"], both, same)
        change = _relative_change(b["value"], n["value"])
        if change > rtol:
            moved.append(f"  {point_label(b)}: value {b['value']:.10g} -> {n['value']:.10g} "
                         f"(relative {change:.2g} > {rtol:g}, {'deterministic' if both else 'not deterministic'}"
                         f"{', same host' if same else ''})")
    head = (f"values: {len(pairs)} points within their tolerance" if not moved else
            f"values MOVED beyond their tolerance at {len(moved)} of {len(pairs)} points")
    return [head] + moved[:limit] + ([f"  ... and {len(moved) - limit} more"] if len(moved) > limit else [])


def _ok_pairs(base, new) -> list[tuple[dict, dict]]:
    if any(c not in frame for frame in (base, new) for c in ("key", "value", "status")):
        return []
    new_rows = {r["key"]: r for r in new.to_dict("records") if r["status"] == "ok"}
    return [(r, new_rows[r["key"]]) for r in base.to_dict("records")
            if r["status"] == "ok" and r["key"] in new_rows
            and _finite(r["value"]) and _finite(new_rows[r["key"]]["value"])]


def _true(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and bool(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _relative_change(old: float, new: float) -> float:
    if old == new:
        return 0.0
    return abs(new - old) / abs(old) if old else math.inf


def _device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


__all__ = ["deterministic", "tolerance", "value_changes", "DETERMINISTIC", "TOLERANCES"]
