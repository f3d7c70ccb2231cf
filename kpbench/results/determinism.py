"""What two runs of a point may differ by, and which points moved beyond it.

Whether a point is deterministic is a backend fact (:mod:`kpbench.backends.determinism`,
measured by ``scripts/determinism.py``), stored in each row's ``deterministic``.
:func:`tolerance` is what two runs of a point may differ by in ``value`` (relative):
deterministic points on one host agree to the bit (0); across machines, commits and
libraries the summation order changes, so the dtype's round-off, amplified by the op
(a Sinkhorn solve to a tolerance may stop one iteration earlier): 1e-9 in float64,
1e-4 in float32; points not known to be deterministic get 10x more.
:func:`value_changes` lists the points of two runs whose values moved beyond it.
"""
from __future__ import annotations

import math

# relative tolerance on a point's value between two runs: (deterministic, dtype) -> rtol
TOLERANCES = {
    (True, "float64"): 1e-9,
    (True, "float32"): 1e-4,
    (False, "float64"): 1e-8,
    (False, "float32"): 1e-3,
}


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


__all__ = ["tolerance", "value_changes", "TOLERANCES"]
