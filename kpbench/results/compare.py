"""Compare two benchmark runs point by point, like ``asv continuous --factor``.

Rows are matched by their point key. For points that are ok on both sides the ratios
new/baseline of ``time_median_s``, ``peak_mem_bytes`` and ``rel_err`` are computed; a ratio
above ``threshold`` is a regression, below ``1/threshold`` an improvement. A point that
was ok in the baseline and is not ok in the new run (oom, timeout, error, ...) is a
regression too. Time, memory and status regressions fail the comparison (exit 1).

Noise floors, so that a ratio of two meaningless numbers never decides anything:

* relative errors are compared only when both are above ``err_floor`` (1e-12): errors at
  round-off level (and the reference's own 0) would otherwise give 0/0 or huge ratios;
  error changes are reported but do not fail the comparison;
* peak memory is compared only when the larger of the two is at least ``mem_floor``
  (1 MiB): CPU peaks are RSS deltas, which jitter by a few pages.

Points present on one side only are listed in a note and ignored; no point in common at
all is an error (a regression gate must not pass by comparing nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from kpbench.backends.base import KPBenchError
from kpbench.results.report import fmt_bytes, fmt_err, fmt_seconds, point_label

DEFAULT_THRESHOLD = 1.1
ERR_FLOOR = 1e-12
MEM_FLOOR = 1 << 20
# (column, short name, formatter, fails the comparison when it regresses)
METRICS = (
    ("time_median_s", "time", fmt_seconds, True),
    ("peak_mem_bytes", "mem", fmt_bytes, True),
    ("rel_err", "err", fmt_err, False),
)
_MAX_LISTED = 10


@dataclass
class PointComparison:
    label: str
    base_status: str
    new_status: str
    base: dict = field(default_factory=dict)     # metric short name -> baseline value
    new: dict = field(default_factory=dict)
    ratios: dict = field(default_factory=dict)   # metric short name -> new/baseline (compared only)
    regressed: list = field(default_factory=list)   # metric names, or "status"
    improved: list = field(default_factory=list)

    @property
    def failing(self) -> bool:
        gating = {name for _, name, _, gates in METRICS if gates} | {"status"}
        return any(m in gating for m in self.regressed)


@dataclass
class Comparison:
    threshold: float
    points: list[PointComparison]
    only_baseline: list[str]
    only_new: list[str]
    failed_both: int

    @property
    def failed(self) -> bool:
        return any(p.failing for p in self.points)

    def count(self, metric: str, attr: str = "regressed") -> int:
        return sum(metric in getattr(p, attr) for p in self.points)


def compare(baseline: pd.DataFrame, new: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
            err_floor: float = ERR_FLOOR, mem_floor: float = MEM_FLOOR) -> Comparison:
    """Compare two sets of sweep rows (one row per key each, see report.select_run)."""
    if not (threshold > 1 and math.isfinite(threshold)):
        raise KPBenchError(f"threshold must be a finite number > 1 (e.g. 1.1), got {threshold!r}")
    for name, frame in (("baseline", baseline), ("new", new)):
        if frame.empty:
            raise KPBenchError(f"the {name} has no sweep rows")
        if frame["key"].duplicated().any():
            raise KPBenchError(f"the {name} has several rows per point key; pick one run first")
    base_rows = {r["key"]: r for r in baseline.to_dict("records")}
    new_rows = {r["key"]: r for r in new.to_dict("records")}
    common = base_rows.keys() & new_rows.keys()
    if not common:
        raise KPBenchError(
            f"no sweep point in common ({len(base_rows)} points in the baseline, {len(new_rows)} "
            "in the new run): were they run with the same sweep spec and kind?")
    points, failed_both = [], 0
    for key in sorted(common):
        b, n = base_rows[key], new_rows[key]
        if b["status"] != "ok" and n["status"] != "ok":
            failed_both += 1
            continue
        points.append(_compare_point(b, n, threshold, err_floor, mem_floor))
    return Comparison(
        threshold=threshold, points=points, failed_both=failed_both,
        only_baseline=sorted(point_label(base_rows[k]) for k in base_rows.keys() - new_rows.keys()),
        only_new=sorted(point_label(new_rows[k]) for k in new_rows.keys() - base_rows.keys()),
    )


def _compare_point(b: dict, n: dict, threshold: float, err_floor: float, mem_floor: float):
    point = PointComparison(point_label(b), b["status"], n["status"])
    if b["status"] != "ok":
        point.improved.append("status")
        return point
    if n["status"] != "ok":
        point.regressed.append("status")
        return point
    for column, name, _, _ in METRICS:
        base, new = _number(b.get(column)), _number(n.get(column))
        point.base[name], point.new[name] = base, new
        if not _comparable(name, base, new, err_floor, mem_floor):
            continue
        ratio = new / base
        point.ratios[name] = ratio
        if ratio > threshold:
            point.regressed.append(name)
        elif ratio < 1 / threshold:
            point.improved.append(name)
    return point


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _comparable(name: str, base, new, err_floor: float, mem_floor: float) -> bool:
    if base is None or new is None:
        return False
    if name == "err":
        return base > err_floor and new > err_floor
    if name == "mem":
        return base > 0 and new > 0 and max(base, new) >= mem_floor
    return base > 0 and new > 0


def _mark(point: PointComparison) -> str:
    if "status" in point.regressed:
        return "!"
    if point.failing:
        return "+"
    if point.regressed:
        return "~"      # an error ratio moved: reported, not failing
    return "-" if point.improved else " "


def format_comparison(result: Comparison, only_changed: bool = False) -> str:
    """The table of ratios (worst first), then the notes and a one-line verdict."""
    points = sorted(result.points, key=lambda p: (not p.failing, "status" not in p.regressed,
                                                 -p.ratios.get("time", 0.0), p.label))
    if only_changed:
        points = [p for p in points if p.regressed or p.improved]
    header = f"{'':1} {'time':>8} {'mem':>8} {'err':>8}  {'base time':>10} {'new time':>10}  point"
    lines = [header, "-" * len(header)]
    for p in points:
        ratios = [f"{p.ratios[name]:8.3f}" if name in p.ratios else f"{'-':>8}" for _, name, _, _ in METRICS]
        if "status" in p.regressed or "status" in p.improved:
            before, after = p.base_status, p.new_status
        else:
            before, after = fmt_seconds(p.base.get("time")), fmt_seconds(p.new.get("time"))
        lines.append(f"{_mark(p)} {' '.join(ratios)}  {before:>10} {after:>10}  {p.label}")
    if len(lines) == 2:
        lines.append("(no changed points)" if only_changed else "(no point ok on either side)")
    lines += [""] + _notes(result)
    return "\n".join(lines)


def _notes(result: Comparison) -> list[str]:
    t = result.threshold
    notes = [
        f"{len(result.points)} points compared (ratios new/baseline; regression > {t:g}, "
        f"improvement < {1 / t:.3g}; marks: + regression, ! ok -> failed, ~ error ratio only, "
        f"- improvement).",
        f"regressions: time {result.count('time')}, memory {result.count('mem')}, "
        f"status {result.count('status')}; error ratio (reported, not failing) {result.count('err')}.",
        f"improvements: time {result.count('time', 'improved')}, memory {result.count('mem', 'improved')}, "
        f"status {result.count('status', 'improved')}, error {result.count('err', 'improved')}.",
    ]
    if result.failed_both:
        notes.append(f"{result.failed_both} points failed on both sides (ignored).")
    for side, labels in (("baseline", result.only_baseline), ("new run", result.only_new)):
        if labels:
            shown = "; ".join(labels[:_MAX_LISTED]) + (" ..." if len(labels) > _MAX_LISTED else "")
            notes.append(f"note: {len(labels)} points only in the {side} (ignored): {shown}")
    notes.append("REGRESSION" if result.failed else "no regression")
    return notes


__all__ = ["compare", "format_comparison", "Comparison", "PointComparison",
           "DEFAULT_THRESHOLD", "ERR_FLOOR", "MEM_FLOOR"]
