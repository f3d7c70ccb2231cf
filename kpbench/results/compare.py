"""Compare two benchmark runs point by point: a regression gate that noise does not trip.

Rows are matched by their point key. For points that are ok on both sides the ratios
new/baseline of ``time_median_s``, ``peak_mem_bytes`` and ``rel_err`` are computed.

A **time** change counts (regression above ``threshold``, improvement below
``1/threshold``) only when the two timing distributions differ too, decided as asv does
(``asv.statistics.is_different``):

* with the per-call sample times of both rows (``time_samples_s``), and enough of them for
  the test to be able to reach ``p_threshold`` (2 / C(n+m, n) < p_threshold; 10 and 10
  samples can, 5 and 5 cannot), a two-sided Mann-Whitney U rank test: different when
  p < ``p_threshold`` (default 0.002, asv's);
* otherwise the inter-quartile ranges [q1, q3] (``time_q1_s``/``time_q3_s``, or the
  samples' quartiles, or median +- IQR/2 from ``time_iqr_s``): different when they do not
  overlap;
* a row without any spread recorded is judged by its ratio alone.

Two rows of one **interleaved** session (the same ``interleave_id``, see
:mod:`kpbench.bench.interleave`: their i-th samples were taken one after the other, in
the same state of the machine) are compared **paired**: the time ratio is the median of
the per-round ratios new_i / base_i, and the change counts when a two-sided Wilcoxon
signed-rank test of their logarithms gives p < ``p_threshold`` (10 rounds or more can
reach 0.002). That cancels the machine's drift, which no test on unpaired samples can.

A ratio over the threshold whose distributions do not differ is reported as noise ("?").
A point that was ok in the baseline and is not ok in the new run (oom, timeout, error,
...) is a regression too. Time, memory and status regressions fail the comparison (exit 1).

Noise floors, so that a ratio of two meaningless numbers never decides anything:

* relative errors are compared only when both are above ``err_floor`` (1e-12): errors at
  round-off level (and the reference's own 0) would otherwise give 0/0 or huge ratios;
  error changes are reported but do not fail the comparison;
* peak memory is compared only when the larger of the two is at least ``mem_floor``
  (1 MiB): CPU peaks are RSS deltas, which jitter by a few pages.

Two rows measured on different hosts or GPUs, or with different torch, pykeops or numpy
versions, are not comparable: :func:`compare` refuses (``EnvironmentMismatch``) unless
``allow_env_mismatch`` is set, and then says what differed. Points present on one side
only are listed in a note and ignored; no point in common at all is an error (a
regression gate must not pass by comparing nothing).

A **broken row** is an error too (``BrokenRows``, exit 2), never a pass: an ok timed row
(sweep ``speed``, or any row with samples) of a compared point whose ``time_median_s`` is
missing, NaN, infinite or not positive, or whose ``time_samples_s`` holds such a value. Such
a row has no time to compare, and skipping it would let a run of NaNs say "no regression".

What is read where (so that a million rows compare in seconds): one vectorised pass over
the compared rows flags those whose median is not a positive number or whose samples
hold anything but positive finite numbers; only the flagged rows are checked row by row
(:func:`timing_problems`, which words the refusal). The samples are turned into Python
lists only for the points whose verdict uses them: those with a median time ratio past
the threshold either way (the rank test, or the samples' quartiles) and the interleaved
pairs (their ratio is the per-round one). Every other point is decided from its medians,
as it would be with its samples: within the threshold no test is run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kpbench.errors import KPBenchError
from kpbench.results.format import (CONFIG_COLUMNS, fmt_bytes, fmt_err, fmt_seconds, number,
                                    point_label, value)
from kpbench.results.selection import quartiles, samples
from kpbench.results.store import printable

DEFAULT_THRESHOLD = 1.1
P_THRESHOLD = 0.002
ERR_FLOOR = 1e-12
MEM_FLOOR = 1 << 20
# (column, short name, formatter, fails the comparison when it regresses)
METRICS = (
    ("time_median_s", "time", fmt_seconds, True),
    ("peak_mem_bytes", "mem", fmt_bytes, True),
    ("rel_err", "err", fmt_err, False),
)
# What must be the same on both sides for their timings to be comparable.
ENV_COLUMNS = ("host", "gpu", "torch_version", "pykeops_version", "numpy_version")
_MAX_LISTED = 10
SAMPLES = "time_samples_s"
# What a point's label is made of (format.point_label).
LABEL_COLUMNS = [c for c in CONFIG_COLUMNS if c != "M_rel"] + ["N", "M", "seed", "sweep", "op",
                                                                 "backend"]
# What compare reads of a row besides its samples.
ROW_COLUMNS = list(dict.fromkeys(
    ["key", "status", "run_id", "interleave_id", "time_q1_s", "time_q3_s", "time_iqr_s"]
    + [column for column, _, _, _ in METRICS] + list(ENV_COLUMNS) + LABEL_COLUMNS))


class EnvironmentMismatch(KPBenchError):
    """The two sides were measured on different machines or library versions."""


class BrokenRows(KPBenchError):
    """An ok row without a usable time: an error of the run that stored it."""


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
    noise: list = field(default_factory=list)    # past the threshold, same distribution
    evidence: str = ""                           # how the time distributions were judged

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
    env_differences: list[str] = field(default_factory=list)   # allowed mismatches, described
    p_threshold: float = P_THRESHOLD

    @property
    def failed(self) -> bool:
        return any(p.failing for p in self.points)

    def count(self, metric: str, attr: str = "regressed") -> int:
        return sum(metric in getattr(p, attr) for p in self.points)


@dataclass(frozen=True)
class GateSettings:
    threshold: float = DEFAULT_THRESHOLD
    err_floor: float = ERR_FLOOR
    mem_floor: float = MEM_FLOOR
    p_threshold: float = P_THRESHOLD


def compare(baseline: pd.DataFrame, new: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
            err_floor: float = ERR_FLOOR, mem_floor: float = MEM_FLOOR,
            p_threshold: float = P_THRESHOLD, allow_env_mismatch: bool = False) -> Comparison:
    """Compare two sets of sweep rows (one row per key each, see selection.select_run)."""
    if not (threshold > 1 and math.isfinite(threshold)):
        raise KPBenchError(f"threshold must be a finite number > 1 (e.g. 1.1), got {threshold!r}")
    if not 0 < p_threshold < 1:
        raise KPBenchError(f"p_threshold must be in (0, 1) (e.g. 0.002), got {p_threshold!r}")
    settings = GateSettings(threshold, err_floor, mem_floor, p_threshold)
    base_rows = _rows_by_key(baseline, "baseline")
    new_rows = base_rows if new is baseline else _rows_by_key(new, "new")   # the same rows
    common = sorted(base_rows.keys() & new_rows.keys())
    if not common:
        raise KPBenchError(
            f"no sweep point in common ({len(base_rows)} points in the baseline, {len(new_rows)} "
            "in the new run): were they run with the same sweep spec and kind?")
    flagged = [_flag_timing(baseline, common), _flag_timing(new, common)]
    _attach_samples(baseline, base_rows, [k for k, bad in zip(common, flagged[0]) if bad])
    _attach_samples(new, new_rows, [k for k, bad in zip(common, flagged[1]) if bad])
    _check_timed_rows([(side, rows[k]) for i, k in enumerate(common) for side, rows, flags in
                       (("baseline", base_rows, flagged[0]), ("new", new_rows, flagged[1]))
                       if flags[i]])
    differences = env_differences([(base_rows[k], new_rows[k]) for k in common])
    if differences and not allow_env_mismatch:
        raise EnvironmentMismatch(
            "the two sides were measured in different environments: " + "; ".join(differences)
            + ". Their timings are not comparable; pass --allow-env-mismatch "
              "(allow_env_mismatch=True) to compare them anyway.")
    pairs = [(base_rows[k], new_rows[k]) for k in common]
    compared = [(b, n) for b, n in pairs if b["status"] == "ok" or n["status"] == "ok"]
    wanted = [b["key"] for b, n in compared if _needs_samples(b, n, threshold)]
    _attach_samples(baseline, base_rows, wanted)
    _attach_samples(new, new_rows, wanted)
    return Comparison(
        threshold=threshold, p_threshold=p_threshold, env_differences=differences,
        points=[compare_point(b, n, settings) for b, n in compared],
        failed_both=len(pairs) - len(compared),
        only_baseline=sorted(point_label(base_rows[k]) for k in base_rows.keys() - new_rows.keys()),
        only_new=sorted(point_label(new_rows[k]) for k in new_rows.keys() - base_rows.keys()),
    )


def _rows_by_key(frame: pd.DataFrame, name: str) -> dict:
    if frame.empty:
        raise KPBenchError(f"the {name} has no sweep rows")
    if frame["key"].duplicated().any():
        raise KPBenchError(f"the {name} has several rows per point key; pick one run first")
    columns = [c for c in ROW_COLUMNS if c in frame]
    return {r["key"]: r for r in records(frame, columns)}


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """``frame[columns].to_dict("records")``, column by column (several times faster on
    Arrow-backed string columns, which to_dict walks one Python call per value)."""
    values = [_column_values(frame[c]) for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]


def _column_values(column: pd.Series) -> list:
    """``column.tolist()``; a column of few distinct texts (status, host, op, ...) as one
    Python object per distinct value, shared by its rows, not one per row."""
    if pd.api.types.is_numeric_dtype(column) or len(column) < 2:
        return column.tolist()
    try:
        codes, uniques = pd.factorize(column)
    except TypeError:                  # unhashable values
        return column.tolist()
    if 2 * len(uniques) > len(column):
        return column.tolist()
    # the distinct values, then the column's own missing value (code -1 takes the last)
    distinct = pd.Series(uniques).tolist() + (column[column.isna()].iloc[:1].tolist() or [None])
    shared = np.empty(len(distinct), dtype=object)
    for i, v in enumerate(distinct):
        shared[i] = v
    return shared[codes].tolist()


def _positions(frame: pd.DataFrame, keys: list) -> np.ndarray:
    """The row positions of ``keys`` in ``frame`` (one row per key, see _rows_by_key)."""
    return pd.Index(frame["key"]).get_indexer(keys)


def _flag_timing(frame: pd.DataFrame, keys: list) -> np.ndarray:
    """Per key, whether its row may be broken (module doc): a vectorised pass that may flag
    a good row (timing_problems then finds nothing) but never misses a broken one."""
    rows = frame.iloc[_positions(frame, keys)]
    median = rows["time_median_s"] if "time_median_s" in rows else pd.Series(np.nan, rows.index)
    good_median = (np.isfinite(median.to_numpy(float)) & (median.to_numpy(float) > 0)
                   if pd.api.types.is_float_dtype(median) else np.zeros(len(rows), bool))
    bad, stored = (_bad_samples(rows[SAMPLES]) if SAMPLES in rows
                   else (np.zeros(len(rows), bool), np.zeros(len(rows), bool)))
    timed = _equals(rows, "sweep", "speed") | stored
    return (bad | (timed & ~good_median)) & _equals(rows, "status", "ok")


def _equals(rows: pd.DataFrame, column: str, text: str) -> np.ndarray:
    """Per row, whether ``column`` holds ``text`` (a null or an absent column: no)."""
    if column not in rows:
        return np.zeros(len(rows), bool)
    return rows[column].eq(text).fillna(False).to_numpy(bool)


def _bad_samples(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether its samples may hold a null, NaN, inf or a value <= 0 (every row,
    when the column cannot be read as lists of numbers at once), and whether it has any."""
    import pyarrow as pa
    import pyarrow.compute as pc

    everywhere = np.ones(len(column), bool)
    try:
        lists = pa.array(column.to_numpy(object), type=pa.list_(pa.float64()), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return everywhere, everywhere
    flat = pc.list_flatten(lists)
    good = pc.fill_null(pc.and_(pc.is_finite(flat), pc.greater(flat, 0.0)), False)
    bad_rows = pc.list_parent_indices(lists).to_numpy()[~good.to_numpy(zero_copy_only=False)]
    flags = np.zeros(len(column), bool)
    flags[bad_rows] = True
    stored = pc.fill_null(pc.list_value_length(lists), 0).to_numpy() > 0
    return flags, stored


def _attach_samples(frame: pd.DataFrame, rows: dict, keys: list) -> None:
    """Give the rows of ``keys`` their samples (the rest are decided without them)."""
    if SAMPLES not in frame or not keys:
        return
    stored = frame[SAMPLES].to_numpy(object)[_positions(frame, keys)]
    for key, raw in zip(keys, stored):
        rows[key][SAMPLES] = raw


def _needs_samples(b: dict, n: dict, threshold: float) -> bool:
    """Whether compare_point may use the samples of this pair: an interleaved pair (paired
    ratio), or a median time ratio past the threshold either way (no ratio: no time verdict)."""
    if b["status"] != "ok" or n["status"] != "ok":
        return False
    session = value(b.get("interleave_id"))
    if session and session == value(n.get("interleave_id")):
        return True
    base, new = number(b.get("time_median_s")), number(n.get("time_median_s"))
    if base is None or new is None or base <= 0 or new <= 0:
        return False
    return not 1 / threshold <= new / base <= threshold


def _check_timed_rows(rows: list[tuple[str, dict]]) -> None:
    """Raise BrokenRows naming the side, run, key and column of every broken row (module doc)."""
    problems = [f"{side} run {_shown(row.get('run_id'))}, key {_shown(row['key'])}: {problem}"
                for side, row in rows if row["status"] == "ok" for problem in timing_problems(row)]
    if problems:
        shown = problems[:_MAX_LISTED] + ([f"... and {len(problems) - _MAX_LISTED} more"]
                                          if len(problems) > _MAX_LISTED else [])
        raise BrokenRows(f"{len(problems)} ok row(s) without a usable time, a broken run: "
                         + "; ".join(shown))


def timing_problems(row: dict) -> list[str]:
    """What makes an ok row's timing unusable: "column is ..." (none: usable or not timed)."""
    raw = row.get("time_samples_s")
    stored = list(raw) if isinstance(raw, (list, tuple, np.ndarray)) else []
    if value(row.get("sweep")) != "speed" and not stored:
        return []     # memory and accuracy rows time nothing
    problems = []
    median = row.get("time_median_s")
    if not _positive(median):
        problems.append(f"time_median_s is {_what(median)}")
    bad = [s for s in stored if not _positive(s)]
    if bad:
        problems.append(f"time_samples_s holds {len(bad)} of {len(stored)} samples that are "
                        f"{', '.join(sorted({_what(s) for s in bad}))}")
    return problems


def _shown(v) -> str:
    return printable(str(value(v)))


def _positive(v) -> bool:
    n = number(v)
    return n is not None and n > 0


def _what(v) -> str:
    if value(v) is None:
        return "missing or NaN"
    try:
        n = float(v)
    except (TypeError, ValueError):
        return "not a number"
    return {math.inf: "inf", -math.inf: "-inf"}.get(n, f"{n:g} (not positive)")


def env_differences(pairs: list[tuple[dict, dict]]) -> list[str]:
    """'host: a -> b' for each ENV_COLUMNS value that differs between matched rows
    (a value unknown on one side is not a difference)."""
    seen: dict[str, set] = {}
    for b, n in pairs:
        for column in ENV_COLUMNS:
            before, after = value(b.get(column)), value(n.get(column))
            if before not in (None, "") and after not in (None, "") and before != after:
                seen.setdefault(column, set()).add((str(before), str(after)))
    return [f"{column}: " + ", ".join(f"{x} -> {y}" for x, y in sorted(changes))
            for column, changes in seen.items()]


def compare_point(b: dict, n: dict, settings: GateSettings = GateSettings()) -> PointComparison:
    point = PointComparison(point_label(b), b["status"], n["status"])
    if b["status"] != "ok":
        point.improved.append("status")
        return point
    if n["status"] != "ok":
        point.regressed.append("status")
        return point
    for column, name, _, _ in METRICS:
        base, new = number(b.get(column)), number(n.get(column))
        point.base[name], point.new[name] = base, new
        if _comparable(name, base, new, settings):
            pairs = paired_samples(b, n) if name == "time" else None
            point.ratios[name] = paired_ratio(*pairs) if pairs else new / base
            _judge(point, name, b, n, settings)
    return point


def paired_samples(b: dict, n: dict) -> tuple[list, list] | None:
    """The two rows' samples round by round, when one interleaved session measured both."""
    session = value(b.get("interleave_id"))
    if not session or session != value(n.get("interleave_id")):
        return None
    x, y = samples(b), samples(n)
    if not x or len(x) != len(y) or len(x) != len(b.get("time_samples_s")) or min(x + y) <= 0:
        return None
    return x, y


def paired_ratio(x: list, y: list) -> float:
    """The median of the per-round ratios y_i / x_i."""
    return float(np.exp(np.median(np.log(y) - np.log(x))))


def _judge(point: PointComparison, name: str, b: dict, n: dict, settings: GateSettings) -> None:
    ratio, t = point.ratios[name], settings.threshold
    if 1 / t <= ratio <= t:
        return
    if name == "time":
        differ, point.evidence = distributions_differ(b, n, settings.p_threshold)
        if not differ:
            point.noise.append(name)
            return
    (point.regressed if ratio > t else point.improved).append(name)


def rank_test_can_decide(n: int, m: int, p_threshold: float) -> bool:
    """Whether a two-sided exact Mann-Whitney test of n and m samples can reach p_threshold."""
    return n > 0 and m > 0 and 2 / math.comb(n + m, min(n, m)) < p_threshold


def distributions_differ(b: dict, n: dict, p_threshold: float = P_THRESHOLD) -> tuple[bool, str]:
    """(differ, how it was decided) for the timings of two rows; see the module doc."""
    pairs = paired_samples(b, n)
    if pairs and 2 / 2 ** len(pairs[0]) < p_threshold:
        from scipy.stats import wilcoxon

        logs = np.log(pairs[1]) - np.log(pairs[0])
        p = float(wilcoxon(logs, alternative="two-sided").pvalue) if np.any(logs) else 1.0
        return p < p_threshold, f"paired over {len(logs)} interleaved rounds, signed-rank p={p:.2g}"
    x, y = samples(b), samples(n)
    if rank_test_can_decide(len(x), len(y), p_threshold):
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
        return p < p_threshold, f"rank test p={p:.2g} ({len(x)} vs {len(y)} samples)"
    qb, qn = quartiles(b), quartiles(n)
    if qb is None or qn is None:
        return True, "no spread recorded: ratio alone"
    apart = qb[1] < qn[0] or qn[1] < qb[0]
    return apart, "IQRs apart" if apart else "IQRs overlap"


def _comparable(name: str, base, new, settings: GateSettings) -> bool:
    if base is None or new is None:
        return False
    if name == "err":
        return base > settings.err_floor and new > settings.err_floor
    if name == "mem":
        return base > 0 and new > 0 and max(base, new) >= settings.mem_floor
    return base > 0 and new > 0


def mark(point: PointComparison) -> str:
    if "status" in point.regressed:
        return "!"
    if point.failing:
        return "+"
    if point.regressed:
        return "~"      # an error ratio moved: reported, not failing
    if point.improved:
        return "-"
    return "?" if point.noise else " "


def format_comparison(result: Comparison, only_changed: bool = False) -> str:
    """The table of ratios (worst first), then the notes and a one-line verdict."""
    points = sorted(result.points, key=lambda p: (not p.failing, "status" not in p.regressed,
                                                 -p.ratios.get("time", 0.0), p.label))
    if only_changed:
        points = [p for p in points if p.regressed or p.improved or p.noise]
    header = f"{'':1} {'time':>8} {'mem':>8} {'err':>8}  {'base time':>10} {'new time':>10}  point"
    lines = [header, "-" * len(header)]
    for p in points:
        ratios = [f"{p.ratios[name]:8.3f}" if name in p.ratios else f"{'-':>8}" for _, name, _, _ in METRICS]
        if "status" in p.regressed or "status" in p.improved:
            before, after = p.base_status, p.new_status
        else:
            before, after = fmt_seconds(p.base.get("time")), fmt_seconds(p.new.get("time"))
        evidence = f"  [{p.evidence}]" if p.evidence else ""
        lines.append(f"{mark(p)} {' '.join(ratios)}  {before:>10} {after:>10}  {p.label}{evidence}")
    if len(lines) == 2:
        lines.append("(no changed points)" if only_changed else "(no point ok on either side)")
    lines += [""] + _notes(result)
    return "\n".join(lines)


def _notes(result: Comparison) -> list[str]:
    t = result.threshold
    notes = [
        f"{len(result.points)} points compared (ratios new/baseline; regression > {t:g}, "
        f"improvement < {1 / t:.3g}, a time change only where the distributions differ "
        f"(rank test p < {result.p_threshold:g}, else IQRs apart; rows of one interleaved session: "
        f"median per-round ratio, signed-rank test); marks: + regression, "
        f"! ok -> failed, ~ error ratio only, - improvement, ? past the threshold but within noise).",
        f"regressions: time {result.count('time')}, memory {result.count('mem')}, "
        f"status {result.count('status')}; error ratio (reported, not failing) {result.count('err')}.",
        f"improvements: time {result.count('time', 'improved')}, memory {result.count('mem', 'improved')}, "
        f"status {result.count('status', 'improved')}, error {result.count('err', 'improved')}.",
        f"within noise (ratio past the threshold, same distribution): {result.count('time', 'noise')}.",
    ]
    if result.env_differences:
        notes.append("note: environments differ (allowed): " + "; ".join(result.env_differences))
    if result.failed_both:
        notes.append(f"{result.failed_both} points failed on both sides (ignored).")
    for side, labels in (("baseline", result.only_baseline), ("new run", result.only_new)):
        if labels:
            shown = "; ".join(labels[:_MAX_LISTED]) + (" ..." if len(labels) > _MAX_LISTED else "")
            notes.append(f"note: {len(labels)} points only in the {side} (ignored): {shown}")
    notes.append("REGRESSION" if result.failed else "no regression")
    return notes


__all__ = ["compare", "compare_point", "distributions_differ", "env_differences",
           "paired_samples", "paired_ratio",
           "format_comparison", "mark", "Comparison",
           "BrokenRows", "EnvironmentMismatch", "GateSettings", "timing_problems", "PointComparison",
           "DEFAULT_THRESHOLD", "ENV_COLUMNS", "ERR_FLOOR", "MEM_FLOOR", "P_THRESHOLD"]
