"""The checks of a sweep's values: each raises a KPBenchError naming the value and what is
allowed (the caller adds the key or flag, see :func:`check_fields`). The axes' checks
(:data:`AXIS_CHECKS`) serve :class:`kpbench.bench.plan.SweepSpec`; the settings' checks
(:data:`SETTING_CHECKS`) serve :class:`kpbench.bench.settings.Settings`.
"""
from __future__ import annotations

import math
import os
import pathlib
import tempfile
from typing import Any, Callable

from kpbench.backends import backend_names
from kpbench.backends.base import KERNELS, POWERS
from kpbench.errors import KPBenchError
from kpbench.results.meta import RUNS
from kpbench.results.store import SWEEPS
from kpbench.bench import ops
from kpbench.bench.limits import (MAX_BYTES, MAX_CPUS, MAX_OFFSET, MAX_POINTS, MAX_REPEATS, MAX_SCALE,
                                  MAX_SECONDS, MAX_SIZE, MIN_SCALE, SEED_LIMIT)

KINDS = ("speed", "memory", "accuracy")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
EXECUTORS = ("ray", "inline")     # what --executor may name (an interleaved sweep runs its own)


def _one_of(name: str, values: list, allowed) -> None:
    if not values:
        raise KPBenchError(f"no {name} given")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise KPBenchError(
            f"unknown {name} {', '.join(map(repr, bad))}; choose from {', '.join(map(str, allowed))}")


def whole_numbers(name: str, values, low: int, high: int, allow_none: bool = False) -> None:
    _non_empty(name, values)
    for v in values:
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise KPBenchError(f"{name} must be whole numbers from {low} to {bound(high)}, got {v!r}")


def _positive_numbers(name: str, values, allow_none: bool = False) -> None:
    _non_empty(name, values)
    for v in values:
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v) or v <= 0:
            raise KPBenchError(f"{name} must be finite numbers > 0, got {v!r}")


def finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:   # an int beyond any float
        return False


def bound(n: int) -> str:
    """``n``, with its power-of-two form when it is one less than a large power of two."""
    k = n.bit_length()
    return f"{n} (2**{k}-1)" if n > 2**16 and n + 1 == 2**k else str(n)


def _non_empty(name: str, values) -> None:
    if not values:
        raise KPBenchError(f"no {name} values given" + (
            " (use 'none' for none)" if name in ("reach", "iters", "tol", "offsets", "scales") else ""))




def _data_sources(values) -> None:
    from kpbench.datasets.sources import check_name

    _non_empty("data", values)
    for value in values:
        if value is not None:
            check_name(value)


def _scalings(values) -> None:
    _non_empty("scaling", values)
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1 for s in values):
        raise KPBenchError(f"scaling must be in (0, 1), got {values}")


def _seconds(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SECONDS:
        raise KPBenchError(f"{name} must be seconds in (0, {MAX_SECONDS}] (a week), got {value!r}")


def _offsets(values) -> None:
    _non_empty("offsets", values)
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v)
                              or abs(v) > MAX_OFFSET):
            raise KPBenchError(f"offsets must be finite numbers from -{MAX_OFFSET:g} to {MAX_OFFSET:g} "
                               f"(or 'none': not moved), got {v!r}")


def _scales(values) -> None:
    _non_empty("scales", values)
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v)
                              or not MIN_SCALE <= v <= MAX_SCALE):
            raise KPBenchError(f"scales must be numbers from {MIN_SCALE:g} to {MAX_SCALE:g} "
                               f"(or 'none': not scaled), got {v!r}")


# Each axis' check (SweepSpec.validate, and the TOML/flag parser key by key, naming the key).
AXIS_CHECKS: dict[str, Callable[[Any], None]] = {
    "kind": lambda v: _one_of("kind", [v], KINDS),
    "ops": lambda v: _one_of("op", v, list(ops.OPS)),
    "backends": lambda v: _one_of("backend", v, backend_names()),
    "kernels": lambda v: _one_of("kernel", v, KERNELS),
    "losses": lambda v: _one_of("loss", v, ops.FLOW_LOSSES),
    "dtype": lambda v: _one_of("dtype", v, DTYPES),
    "device": lambda v: _one_of("device", v, DEVICES),
    "p": lambda v: _one_of("p", v, POWERS),
    "N": lambda v: whole_numbers("N", v, 1, MAX_SIZE),
    "M": lambda v: v == "same" or whole_numbers("M", v, 1, MAX_SIZE),
    "D": lambda v: v is None or whole_numbers("D", v, 1, MAX_SIZE),
    "data": lambda v: _data_sources(v),
    "blur": lambda v: _positive_numbers("blur", v),
    "reach": lambda v: _positive_numbers("reach", v, allow_none=True),
    "seed": lambda v: whole_numbers("seed", v, 0, SEED_LIMIT - 1),
    "iters": lambda v: whole_numbers("iters", v, 1, MAX_SIZE, allow_none=True),
    "scaling": _scalings,
    "tol": lambda v: _positive_numbers("tol", v, allow_none=True),
    "offsets": _offsets,
    "scales": _scales,
}

# The types a value may have (TOML, or Python callers): an axis is a comma string or a
# list of such items; never a boolean (TOML's true is no number).
WORDS, NUMBERS, WHOLE = (str,), (str, int, float), (str, int)
AXIS_TYPES = {"ops": WORDS, "backends": WORDS, "kernels": WORDS, "losses": WORDS, "dtype": WORDS,
              "device": WORDS, "N": NUMBERS, "M": NUMBERS, "D": NUMBERS, "blur": NUMBERS,
              "p": NUMBERS, "reach": NUMBERS, "seed": NUMBERS, "iters": NUMBERS,
              "scaling": NUMBERS, "tol": NUMBERS, "offsets": NUMBERS, "scales": NUMBERS,
              "data": WORDS}
SCALAR_TYPES = {"kind": WORDS, "repeats": WHOLE, "warmup": WHOLE, "timeout_s": NUMBERS,
                "memory_budget": NUMBERS}
TYPE_NAMES = {WORDS: "a string", NUMBERS: "a number or a string", WHOLE: "an integer or a string",
              (bool,): "a boolean (true or false, unquoted)"}


def check_type(value, types: tuple, axis: bool = False) -> None:
    """``value`` of one of ``types`` (an axis: also a non-empty list of them); KPBenchError if not."""
    items = value if axis and isinstance(value, (list, tuple)) else [value]
    what = TYPE_NAMES.get(types, " or ".join(t.__name__ for t in types))
    if axis and not items:
        raise KPBenchError(f"an empty list; give {what}, or a list of them")
    for item in items:
        if not (isinstance(item, types) and (bool in types or not isinstance(item, bool))):
            hint = ", or a list of them" if axis else ""
            raise KPBenchError(f"must be {what}{hint}, got {type(item).__name__} {item!r}")


def check_fields(values: dict, checks: dict, where: str, labels: dict | None = None) -> None:
    """Refuse unknown keys (listing the known ones), then run ``checks[key](value)``; an
    error names the key (or its flag, from ``labels``), the value and what is allowed."""
    unknown = sorted(set(values) - set(checks))
    if unknown:
        raise KPBenchError(f"unknown key(s) in {where}: {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(checks))}")
    for name, value in values.items():
        try:
            checks[name](value)
        except KPBenchError as exc:
            raise KPBenchError(f"{describe(name, value, where, labels)}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise KPBenchError(f"{describe(name, value, where, labels)}: bad value: {exc}") from None


def describe(name: str, value, where: str, labels: dict | None = None) -> str:
    """"--N '1e30'" for a flag, "N = '1e30' in sweep 1 of suite.toml" for a key."""
    label = (labels or {}).get(name)
    shown = repr(value) if len(repr(value)) <= 200 else repr(value)[:200] + "..."
    return f"{label} {shown}" if label else f"{name} = {shown} in {where}"



def _whole_or_none(name: str, low: int, high: int) -> Callable[[Any], None]:
    return lambda v: v is None or whole_numbers(name, [v], low, high)


def _ray_share(name: str, where: str = "") -> Callable[[Any], None]:
    """Ray's rule for a task's share of a resource: a fraction in (0, 1] or a whole number
    (a GPU point needs little CPU: the multinode GPU scenario runs them at 0.5 CPU)."""
    def check(v) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v) \
                or not 0 < v <= MAX_CPUS or (v > 1 and not float(v).is_integer()):
            raise KPBenchError(f"{name} must be a fraction in (0, 1] or a whole number up to "
                               f"{MAX_CPUS}{where}, got {v!r}")
    return check


def _typed(types: tuple, then: Callable[[Any], Any] = lambda v: None) -> Callable[[Any], None]:
    def check(value):
        check_type(value, types)
        then(value)
    return check


BOOL = (bool,)
SETTING_CHECKS: dict[str, Callable[[Any], None]] = {
    "repeats": lambda v: whole_numbers("repeats", [v], 1, MAX_REPEATS),
    "warmup": lambda v: whole_numbers("warmup", [v], 0, MAX_REPEATS),
    "timeout_s": lambda v: _seconds("timeout_s", v),
    "memory_budget": lambda v: v is None or whole_numbers("memory_budget (bytes)", [v], 1, MAX_BYTES),
    "min_sample_s": lambda v: _seconds("min_sample_s", v),
    "plugins": _typed((tuple, list)),
    "executor": _typed(WORDS, lambda v: _one_of("executor", [v], EXECUTORS)),
    "out": _typed((str, os.PathLike)),
    "resume": _typed(BOOL), "retry_failed": _typed(BOOL), "progress": _typed(BOOL),
    "address": _typed((str, type(None))),
    "num_cpus": _whole_or_none("num_cpus", 1, MAX_CPUS),
    "threads": _whole_or_none("threads", 1, MAX_CPUS),
    "cpus_per_point": _ray_share("cpus_per_point", " (and at most the CPUs of a node of the cluster)"),
    "gpus_per_point": _ray_share("gpus_per_point"),
    "hard_grace_s": lambda v: _seconds("hard_grace_s", v),
    "flush_every": lambda v: whole_numbers("flush_every", [v], 1, MAX_POINTS),
    "flush_s": lambda v: _seconds("flush_s", v),
}


def check_settings(values: dict, where: str = "settings", labels: dict | None = None) -> None:
    """The settings' types and limits (unknown keys are the caller's to refuse)."""
    check_fields({k: v for k, v in values.items() if k in SETTING_CHECKS}, SETTING_CHECKS, where, labels)


def check_writable(out, tables=(SWEEPS, RUNS)) -> None:
    """The results folder and its ``tables``' folders exist and take a file (KPBenchError if not)."""
    root = pathlib.Path(out)
    for folder in (root, *(root / t for t in tables)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise KPBenchError(f"--out {str(out)!r}: cannot write to the folder {str(folder)!r} "
                               f"({exc.strerror or exc}); give a folder you can write to") from None

