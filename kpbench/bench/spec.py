"""Sweep specifications: what to measure, expanded into points with stable keys.

A :class:`SweepSpec` lists values per axis; :func:`expand` takes their cartesian product
and collapses the axes an op does not use (a kernel-product point has no ``p``, every
Sinkhorn point has kernel ``"sinkhorn"``, ...), so no two points measure the same thing.

Ranges are written as in the command line::

    "1e2..1e5"      -> 100, 1000, 10000, 100000   (one value per decade)
    "1e2..1e5:7"    -> 7 log-spaced integers from 100 to 100000
    "100,300,1000"  -> a plain list (items may themselves be ranges)

The numpy backend is the float64 reference: its points are always float64, whatever
``dtype`` lists (so ``--backends numpy,torch --dtype float32`` times torch in float32
against the float64 baseline). Other backends lacking a dtype give ``unsupported`` rows.

Limits, checked before anything runs (a bad spec is a KPBenchError naming the key or
flag, the value and what is allowed): N, M, D and iters are whole numbers from 1 to
2**31-1 (the CUDA kernels and KeOps index with 32-bit ints); seeds from 0 to 2**32-1
(numpy's seeds); a range expression gives at most 10,000 values and a sweep at most
10,000 points (both counted without materialising them); memory_budget at most 2**63-1
bytes, timeout_s at most a week, repeats and warmup at most 10,000; offsets within
+-1e30 and scales from 1e-30 to 1e30, accuracy sweeps only (see ``Point.offset``). TOML values must
have the key's type (a list of words, or of numbers, or a comma string; no booleans).

A point's key is a hash of the measurement kind (speed | memory | accuracy) and the
point fields (schema.POINT_COLUMNS), so resuming a sweep skips exactly the points that
were measured the same way before.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import pathlib
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from kpbench.backends import backend_names
from kpbench.backends.base import KERNELS, POWERS
from kpbench.errors import KPBenchError
from kpbench.results.meta import RUNS
from kpbench.results.schema import POINT_COLUMNS
from kpbench.results.store import SWEEPS
from kpbench.bench import ops
from kpbench.bench.executors import EXECUTORS
from kpbench.bench.limits import (MAX_BYTES, MAX_CPUS, MAX_OFFSET, MAX_POINTS, MAX_REPEATS, MAX_SCALE,
                                  MAX_SECONDS, MAX_SIZE, MAX_VALUES, MIN_SCALE, SEED_LIMIT)

KINDS = ("speed", "memory", "accuracy")
REFERENCE_BACKEND, REFERENCE_DTYPE = "numpy", "float64"
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
NONE_WORDS = ("none", "null", "")   # an axis or setting without a value
# iters only: the eps-scaling schedule instead of a fixed count (conv: its old name). Elsewhere
# these words are errors, not "none": `--memory-budget conv` must not mean "no budget".
SCHEDULE_WORDS = NONE_WORDS + ("scaling", "eps-scaling", "conv", "converge")


@dataclass(frozen=True)
class Point:
    """One sweep point: the POINT_COLUMNS of a row (None = does not apply to this op)."""

    op: str
    backend: str
    kernel: str
    N: int
    M: int
    D: int
    blur: float
    p: int | None
    reach: float | None
    dtype: str
    device: str
    seed: int
    iters: int | None
    scaling: float | None
    tol: float | None = None
    offset: float | None = None   # conditioning (accuracy): x -> scale * x + offset, blur and
    scale: float | None = None    # reach times scale; None: not moved (inputs.make_data)
    data: str | None = None          # the data source (kpbench.datasets.sources); None: the default pair

    def as_row(self) -> dict:
        return dataclasses.asdict(self)

    def key(self, kind: str) -> str:
        return point_key(kind, self.as_row())

    @property
    def eps(self) -> float | None:
        return self.blur ** self.p if self.p is not None else None


# point columns added after rows were stored: left out of the key when null, so that the
# keys of those rows (and of every point that does not use the column) stay what they were
KEY_ONLY_WHEN_SET = ("tol", "offset", "scale", "data")


def _unset(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def point_key(kind: str, fields: dict) -> str:
    """A stable hex key of (kind, point fields); the same on every machine and Python."""
    # floats as repr so 1.0 (a float column) and 1 (an int column) never collide
    canonical = {"kind": kind, **{
        name: repr(v) if isinstance(v := fields.get(name), float) else v for name in POINT_COLUMNS
        if not (name in KEY_ONLY_WHEN_SET and _unset(fields.get(name)))}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SweepSpec:
    """Axes of a sweep (lists of values) and how each point is measured."""

    kind: str = "speed"
    ops: list[str] = field(default_factory=lambda: ["kernel_product"])
    backends: list[str] = field(default_factory=lambda: ["numpy", "torch", "keops"])
    kernels: list[str] = field(default_factory=lambda: ["gaussian"])
    losses: list[str] = field(default_factory=lambda: ["sinkhorn"])   # for flow_step
    N: list[int] = field(default_factory=lambda: [100, 1000, 10000])
    M: list[int] | str = "same"                                          # "same": M = N
    D: list[int] | None = None                                           # None: 3, or the data's own
    blur: list[float] = field(default_factory=lambda: [0.05])
    p: list[int] = field(default_factory=lambda: [2])
    reach: list[float | None] = field(default_factory=lambda: [None])
    dtype: list[str] = field(default_factory=lambda: ["float32"])
    device: list[str] = field(default_factory=lambda: ["cpu"])
    seed: list[int] = field(default_factory=lambda: [0])
    iters: list[int | None] = field(default_factory=lambda: [10, None])  # None: the eps-scaling schedule
    scaling: list[float] = field(default_factory=lambda: [0.5])
    tol: list[float | None] = field(default_factory=lambda: [None])   # with the eps-scaling schedule
    offsets: list[float | None] = field(default_factory=lambda: [None])  # accuracy only: where the
    scales: list[float | None] = field(default_factory=lambda: [None])   # clouds sit, their scale
    # data sources (kpbench.datasets.sources); [None]: the default pair, out of the key.
    # A source with a fixed D (a file, a real data set) takes its own D: D then must be None
    # (not given) or that D.
    data: list[str | None] = field(default_factory=lambda: [None])
    # how to measure (not part of a point's key)
    repeats: int = 10
    warmup: int = 1
    timeout_s: float = 600.0
    memory_budget: int | None = None   # bytes for the dense pre-flight; None: the backend's own

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every field within its type and limits, then the number of points (KPBenchError)."""
        for name, check in FIELD_CHECKS.items():
            check(getattr(self, name))
        _check_conditioning(self)
        points = count_points(self)
        if points > MAX_POINTS:
            raise KPBenchError(
                f"the sweep has {points} points, more than the {MAX_POINTS} allowed per sweep; "
                "use fewer values (or split it into several [[sweep]] tables)")


def expand(spec: SweepSpec) -> list[Point]:
    """All distinct points of ``spec``, in a deterministic order."""
    points: dict[Point, None] = {}
    for op in spec.ops:
        for backend in spec.backends:
            for variant in _op_variants(op, spec):
                for N in spec.N:
                    for M in ([N] if spec.M == "same" else spec.M):
                        for data, D in data_dims(spec):
                            for blur in spec.blur:
                                for dtype in _dtypes(backend, spec):
                                    for device in spec.device:
                                        for seed, offset, scale in itertools.product(
                                                spec.seed, spec.offsets, spec.scales):
                                            point = Point(
                                                op=op, backend=backend, N=int(N), M=int(M),
                                                D=int(D), blur=float(blur), dtype=dtype,
                                                device=device, seed=int(seed), data=data, **variant,
                                                offset=_float_or_none(offset), scale=_float_or_none(scale),
                                            )
                                            points[point] = None
    return list(points)


def _float_or_none(v) -> float | None:
    return None if v is None else float(v)


DEFAULT_D = 3


def data_dims(spec: SweepSpec) -> list[tuple[str | None, int]]:
    """The (data source, D) pairs of ``spec``: a source with a fixed D takes it (a given D
    that disagrees is a KPBenchError), the others every D of the axis (default 3)."""
    from kpbench.datasets.sources import fixed_dim

    pairs = {}
    for data in spec.data:
        fixed = None if data is None else fixed_dim(data)
        if fixed is not None and spec.D is not None and set(spec.D) != {fixed}:
            raise KPBenchError(f"data {data!r} has D={fixed} (fixed by the data); D = {spec.D} "
                               f"disagrees: leave D out or set it to {fixed}")
        for D in [fixed] if fixed is not None else (spec.D or [DEFAULT_D]):
            pairs[(data, D)] = None
    return list(pairs)


def _dtypes(backend: str, spec: SweepSpec) -> list[str]:
    # the reference backend has one dtype: it is the baseline every other dtype is compared to
    return [REFERENCE_DTYPE] if backend == REFERENCE_BACKEND else spec.dtype


def _op_variants(op: str, spec: SweepSpec) -> list[dict]:
    """The (kernel, p, reach, iters, scaling, tol) combinations that matter for ``op``."""
    variants = []
    for name, axes in _variant_axes(op, spec):
        for p in axes["p"]:
            for reach in axes["reach"]:
                for iters in axes["iters"]:
                    # the scaling factor and the tolerance phase go with the eps-scaling schedule
                    scheduled = iters is None
                    scalings = axes["scaling"] if scheduled else [None]
                    tols = axes["tol"] if scheduled else [None]
                    for scaling, tol in itertools.product(scalings, tols):
                        variants.append(dict(
                            kernel=name, p=None if p is None else int(p),
                            reach=None if reach is None else float(reach),
                            iters=None if iters is None else int(iters),
                            scaling=None if scaling is None else float(scaling),
                            tol=None if tol is None else float(tol),
                        ))
    return list({json.dumps(v, sort_keys=True): v for v in variants}.values())


def _variant_axes(op: str, spec: SweepSpec) -> list[tuple[str, dict]]:
    """(kernel name, {axis: values}) of ``op``: the axes it does not use hold [None]."""
    info = ops.OPS[op]
    names = spec.kernels if info.family == "kernel" else (
        spec.losses if info.family == "flow" else [info.family])
    out = []
    for name in dict.fromkeys(names):
        uses = ops.op_fields(op, name)
        out.append((name, {axis: getattr(spec, axis) if axis in uses else [None]
                           for axis in ("p", "reach", "iters", "scaling", "tol")}))
    return out


def count_points(spec: SweepSpec) -> int:
    """``len(expand(spec))``, computed from the axes' lengths (no point is built)."""
    def distinct(values) -> int:
        return len(set(values))

    per_variant = distinct(spec.N) * (1 if spec.M == "same" else distinct(spec.M)) * len(data_dims(spec)) \
        * distinct(spec.blur) * distinct(spec.device) * distinct(spec.seed) \
        * distinct(spec.offsets) * distinct(spec.scales)
    total = 0
    for op in dict.fromkeys(spec.ops):
        variants = 0
        for _, axes in _variant_axes(op, spec):
            schedules = sum(distinct(axes["scaling"]) * distinct(axes["tol"]) if iters is None else 1
                            for iters in set(axes["iters"]))
            variants += distinct(axes["p"]) * distinct(axes["reach"]) * schedules
        total += variants * sum(distinct(_dtypes(backend, spec)) for backend in dict.fromkeys(spec.backends))
    return total * per_variant


# -- parsing -------------------------------------------------------------------

_RANGE = re.compile(r"^\s*([0-9.eE+]+)\s*\.\.\s*([0-9.eE+]+)\s*(?::\s*(\d+))?\s*$")


def parse_sizes(text: str | int | float | list, name: str = "sizes") -> list[int]:
    """Sizes like "1e2..1e5", "1e2..1e5:7", "100,1000", or a list of those; 1..MAX_SIZE."""
    values: list[int] = []
    for item in _items(text):
        if isinstance(item, (int, float)):
            values.append(_as_int(item, text))
            continue
        match = _RANGE.match(item)
        if match:
            values.extend(_log_range(_number(match[1], text), _number(match[2], text), match[3], item))
        else:
            values.append(_as_int(_number(item, text), text))
    _whole_numbers(name, values, 1, MAX_SIZE)
    return list(dict.fromkeys(values))


def _log_range(lo: float, hi: float, count: str | None, item: str) -> list[int]:
    if not 1 <= lo <= hi <= MAX_SIZE:
        raise KPBenchError(f"bad range {item!r}: need 1 <= start <= end <= {_bound(MAX_SIZE)}")
    n = _range_count(count, item) if count else max(1, int(round(math.log10(hi / lo))) + 1)
    if n == 1:
        return [int(round(lo))]
    return [int(round(lo * (hi / lo) ** (k / (n - 1)))) for k in range(n)]


def _range_count(count: str, item: str) -> int:
    """The n of "a..b:n", from 1 to MAX_VALUES (checked on the digits: nothing is built)."""
    digits = count.lstrip("0")
    if not digits or len(digits) > len(str(MAX_VALUES)) or int(digits) > MAX_VALUES:
        raise KPBenchError(f"bad range {item!r}: the count after ':' must be from 1 to {MAX_VALUES}, "
                           f"got {count}")
    return int(digits)


def parse_floats(text, allow_none: bool = False) -> list[float | None]:
    """Numbers like "0.05,0.1" (and "none" where allowed)."""
    return [_maybe_none(item, float, allow_none, text) for item in _items(text)]


def parse_ints(text, allow_none: bool = False, none_words=NONE_WORDS) -> list[int | None]:
    """Integers like "1,2" (or ``none_words`` for None, where allowed: "10,scaling" for iters)."""
    return [_maybe_none(item, lambda v: _as_int(_number(v, text), text), allow_none, text, none_words)
            for item in _items(text)]


def parse_words(text) -> list[str]:
    return [str(item).strip() for item in _items(text) if str(item).strip()]


def parse_bytes(text) -> int | None:
    """"2GiB", "512MB", "1e9", "none" -> bytes (None for none); at most MAX_BYTES."""
    if text is None or (isinstance(text, str) and text.strip().lower() in NONE_WORDS):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        amount = text
    else:
        match = re.match(r"^\s*([0-9.eE+]+)\s*([KMGT]?)(i?)B?\s*$", str(text), re.IGNORECASE)
        if not match:
            raise KPBenchError(f"cannot read a memory size from {text!r} (e.g. 2GiB, 512MB, 1e9)")
        base = 1024 if match[3] or match[2] == "" else 1000
        power = "KMGT".find(match[2].upper()) + 1 if match[2] else 0
        amount = _number(match[1], text) * base ** power
    if not _finite(amount) or not 1 <= amount <= MAX_BYTES:
        raise KPBenchError(f"a memory size must be from 1 to {_bound(MAX_BYTES)} bytes, got {text!r}")
    return int(amount)


def _items(text) -> list:
    if isinstance(text, (list, tuple)):
        out = []
        for item in text:
            out.extend(_items(item) if isinstance(item, str) else [item])
        return out
    if isinstance(text, str):
        return [part.strip() for part in text.split(",")]
    return [text]


def _maybe_none(item, convert: Callable, allow_none: bool, text, none_words=NONE_WORDS):
    if item is None or (isinstance(item, str) and item.strip().lower() in none_words):
        if not allow_none:
            raise KPBenchError(f"'none' is not allowed in {text!r}")
        return None
    if isinstance(item, str):
        item = _number(item, text)
    return convert(item)


def _number(item: str, text) -> float:
    try:
        return float(item)
    except ValueError:
        raise KPBenchError(f"not a number: {item!r} in {text!r}") from None


def _as_int(value: float, text) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bool) or not float(value).is_integer():
        raise KPBenchError(f"not an integer: {value!r} in {text!r}")
    return int(value)


def _one_of(name: str, values: list, allowed) -> None:
    if not values:
        raise KPBenchError(f"no {name} given")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise KPBenchError(
            f"unknown {name} {', '.join(map(repr, bad))}; choose from {', '.join(map(str, allowed))}")


def _whole_numbers(name: str, values, low: int, high: int, allow_none: bool = False) -> None:
    _non_empty(name, values)
    for v in values:
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise KPBenchError(f"{name} must be whole numbers from {low} to {_bound(high)}, got {v!r}")


def _positive_numbers(name: str, values, allow_none: bool = False) -> None:
    _non_empty(name, values)
    for v in values:
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v) or v <= 0:
            raise KPBenchError(f"{name} must be finite numbers > 0, got {v!r}")


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:   # an int beyond any float
        return False


def _bound(n: int) -> str:
    """``n``, with its power-of-two form when it is one less than a large power of two."""
    k = n.bit_length()
    return f"{n} (2**{k}-1)" if n > 2**16 and n + 1 == 2**k else str(n)


def _non_empty(name: str, values) -> None:
    if not values:
        raise KPBenchError(f"no {name} values given" + (
            " (use 'none' for none)" if name in ("reach", "iters", "tol", "offsets", "scales") else ""))


def _data_words(text) -> list[str]:
    """Data sources: a TOML list keeps each item whole (a path may hold a comma); a string
    is split at commas like every other axis."""
    return [item.strip() for item in _items(text)] if isinstance(text, str) else \
        [str(item).strip() for item in text]


def _data_value(word: str) -> str | None:
    """None for the default pair (out of the key); a file's path made absolute, so that
    every worker, whatever its working folder, reads the same file."""
    from kpbench.datasets.sources import DEFAULT, FILE_PREFIX

    if word == DEFAULT:
        return None
    if word.startswith(FILE_PREFIX) and word[len(FILE_PREFIX):]:
        return FILE_PREFIX + os.path.abspath(word[len(FILE_PREFIX):])
    return word


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
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v)
                              or abs(v) > MAX_OFFSET):
            raise KPBenchError(f"offsets must be finite numbers from -{MAX_OFFSET:g} to {MAX_OFFSET:g} "
                               f"(or 'none': not moved), got {v!r}")


def _scales(values) -> None:
    _non_empty("scales", values)
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v)
                              or not MIN_SCALE <= v <= MAX_SCALE):
            raise KPBenchError(f"scales must be numbers from {MIN_SCALE:g} to {MAX_SCALE:g} "
                               f"(or 'none': not scaled), got {v!r}")


def _check_conditioning(spec: SweepSpec) -> None:
    """Offsets and scales: accuracy sweeps only; blur and reach stay finite and > 0 once scaled."""
    scales = [s for s in spec.scales if s is not None]
    if spec.kind != "accuracy" and (scales or any(o is not None for o in spec.offsets)):
        raise KPBenchError(
            f"offsets/scales (--offset/--scale) apply to accuracy sweeps only, got kind {spec.kind!r}: "
            "they move the problem, not the work, so a speed or memory point would measure again "
            "what the unmoved point measured")
    for name, values in (("blur", spec.blur), ("reach", spec.reach)):
        for v, s in itertools.product(values, scales):
            if v is not None and not 0 < v * s < math.inf:
                raise KPBenchError(f"{name} {v!r} times scale {s!r} is {v * s!r}: it must stay a "
                                   "finite number > 0 (use a smaller scale or another blur/reach)")


# Each field's check (SweepSpec.validate, and spec_from_dict key by key, naming the key).
FIELD_CHECKS: dict[str, Callable[[Any], None]] = {
    "kind": lambda v: _one_of("kind", [v], KINDS),
    "ops": lambda v: _one_of("op", v, list(ops.OPS)),
    "backends": lambda v: _one_of("backend", v, backend_names()),
    "kernels": lambda v: _one_of("kernel", v, KERNELS),
    "losses": lambda v: _one_of("loss", v, ops.FLOW_LOSSES),
    "dtype": lambda v: _one_of("dtype", v, DTYPES),
    "device": lambda v: _one_of("device", v, DEVICES),
    "p": lambda v: _one_of("p", v, POWERS),
    "N": lambda v: _whole_numbers("N", v, 1, MAX_SIZE),
    "M": lambda v: v == "same" or _whole_numbers("M", v, 1, MAX_SIZE),
    "D": lambda v: v is None or _whole_numbers("D", v, 1, MAX_SIZE),
    "data": lambda v: _data_sources(v),
    "blur": lambda v: _positive_numbers("blur", v),
    "reach": lambda v: _positive_numbers("reach", v, allow_none=True),
    "seed": lambda v: _whole_numbers("seed", v, 0, SEED_LIMIT - 1),
    "iters": lambda v: _whole_numbers("iters", v, 1, MAX_SIZE, allow_none=True),
    "scaling": _scalings,
    "tol": lambda v: _positive_numbers("tol", v, allow_none=True),
    "offsets": _offsets,
    "scales": _scales,
    "repeats": lambda v: _whole_numbers("repeats", [v], 1, MAX_REPEATS),
    "warmup": lambda v: _whole_numbers("warmup", [v], 0, MAX_REPEATS),
    "timeout_s": lambda v: _seconds("timeout_s", v),
    "memory_budget": lambda v: v is None or _whole_numbers("memory_budget (bytes)", [v], 1, MAX_BYTES),
}


# -- building a spec from a TOML table or command-line strings -----------------

_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ops": parse_words, "backends": parse_words, "kernels": parse_words, "losses": parse_words,
    "N": lambda v: parse_sizes(v, "N"), "D": lambda v: parse_sizes(v, "D"), "blur": parse_floats,
    "p": parse_ints,
    "reach": lambda v: parse_floats(v, allow_none=True), "dtype": parse_words,
    "device": parse_words, "seed": parse_ints,
    "iters": lambda v: parse_ints(v, allow_none=True, none_words=SCHEDULE_WORDS), "scaling": parse_floats,
    "tol": lambda v: parse_floats(v, allow_none=True),
    "offsets": lambda v: parse_floats(v, allow_none=True),
    "scales": lambda v: parse_floats(v, allow_none=True),
    "data": lambda v: [_data_value(w) for w in _data_words(v)],
    "M": lambda v: "same" if isinstance(v, str) and v.strip().lower() == "same" else parse_sizes(v, "M"),
    "repeats": lambda v: _single(parse_ints(v)), "warmup": lambda v: _single(parse_ints(v)),
    "timeout_s": lambda v: _single(parse_floats(v)), "memory_budget": parse_bytes, "kind": str,
}


def _single(values: list):
    if len(values) != 1:
        raise KPBenchError(f"one value, got {len(values)}")
    return values[0]

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


def spec_from_dict(values: dict, where: str = "sweep spec", labels: dict | None = None) -> SweepSpec:
    """A SweepSpec from loosely typed values (TOML tables, parsed command-line strings),
    each checked for its type and limits; ``labels``: field -> the flag that gave it."""
    parsed = {}

    def parse(name, value):
        check_type(value, AXIS_TYPES.get(name) or SCALAR_TYPES[name], axis=name in AXIS_TYPES)
        parsed[name] = _PARSERS[name](value)
        FIELD_CHECKS[name](parsed[name])

    check_fields(values, {name: functools.partial(parse, name) for name in _PARSERS}, where, labels)
    return SweepSpec(**parsed)


def config_tables(data: dict, where) -> tuple[list[dict], dict]:
    """The [[sweep]] tables and the [run] table of a parsed TOML file, their shapes checked."""
    unknown = sorted(set(data) - {"sweep", "run"})
    if unknown:
        raise KPBenchError(f"{where}: unknown table(s) {', '.join(unknown)}; use [[sweep]] and [run]")
    sweeps = data.get("sweep", [])
    if isinstance(sweeps, dict):
        sweeps = [sweeps]
    if not isinstance(sweeps, list) or not all(isinstance(t, dict) for t in sweeps):
        raise KPBenchError(f"{where}: 'sweep' must be [[sweep]] tables (keys: "
                           f"{', '.join(_PARSERS)}), got {sweeps!r}")
    if not sweeps:
        raise KPBenchError(f"{where}: no [[sweep]] table")
    run = data.get("run", {})
    if not isinstance(run, dict):
        raise KPBenchError(f"{where}: 'run' must be a [run] table, got {run!r}")
    return sweeps, run


# -- run options (the [run] table and the execution flags) ----------------------

def _whole_or_none(name: str, low: int, high: int) -> Callable[[Any], None]:
    return lambda v: v is None or _whole_numbers(name, [v], low, high)


def _ray_share(name: str, where: str = "") -> Callable[[Any], None]:
    """Ray's rule for a task's share of a resource: a fraction in (0, 1] or a whole number
    (a GPU point needs little CPU: the multinode GPU scenario runs them at 0.5 CPU)."""
    def check(v) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v) \
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
RUN_CHECKS: dict[str, Callable[[Any], None]] = {
    "executor": _typed(WORDS, lambda v: _one_of("executor", [v], EXECUTORS)),
    "out": _typed((str, os.PathLike)),
    "resume": _typed(BOOL), "retry_failed": _typed(BOOL), "progress": _typed(BOOL),
    "address": _typed((str, type(None))),
    "num_cpus": _whole_or_none("num_cpus", 1, MAX_CPUS),
    "threads": _whole_or_none("threads", 1, MAX_CPUS),
    "cpus_per_point": _ray_share("cpus_per_point", " (and at most the CPUs of a node of the cluster)"),
    "gpus_per_point": _ray_share("gpus_per_point"),
    "hard_grace_s": lambda v: _seconds("hard_grace_s", v),
    "flush_every": lambda v: _whole_numbers("flush_every", [v], 1, MAX_POINTS),
    "flush_s": lambda v: _seconds("flush_s", v),
}


def check_run_options(values: dict, where: str = "run options", labels: dict | None = None) -> None:
    """The run options' types and limits (unknown keys are the caller's to refuse)."""
    check_fields({k: v for k, v in values.items() if k in RUN_CHECKS}, RUN_CHECKS, where, labels)


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
