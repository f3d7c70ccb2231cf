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

A point's key is a hash of the measurement kind (speed | memory | accuracy) and the
point fields (schema.POINT_COLUMNS), so resuming a sweep skips exactly the points that
were measured the same way before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from kpbench.backends import backend_names
from kpbench.backends.base import KERNELS, POWERS
from kpbench.errors import KPBenchError
from kpbench.results.schema import POINT_COLUMNS
from kpbench.suite import workloads

KINDS = ("speed", "memory", "accuracy")
REFERENCE_BACKEND, REFERENCE_DTYPE = "numpy", "float64"
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
NONE_WORDS = ("none", "null", "scaling", "eps-scaling", "conv", "converge", "")  # conv: the old name


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

    def as_row(self) -> dict:
        return dataclasses.asdict(self)

    def key(self, kind: str) -> str:
        return point_key(kind, self.as_row())

    @property
    def eps(self) -> float | None:
        return self.blur ** self.p if self.p is not None else None


# point columns added after rows were stored: left out of the key when null, so that the
# keys of those rows (and of every point that does not use the column) stay what they were
KEY_ONLY_WHEN_SET = ("tol",)


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
    D: list[int] = field(default_factory=lambda: [3])
    blur: list[float] = field(default_factory=lambda: [0.05])
    p: list[int] = field(default_factory=lambda: [2])
    reach: list[float | None] = field(default_factory=lambda: [None])
    dtype: list[str] = field(default_factory=lambda: ["float32"])
    device: list[str] = field(default_factory=lambda: ["cpu"])
    seed: list[int] = field(default_factory=lambda: [0])
    iters: list[int | None] = field(default_factory=lambda: [10, None])  # None: the eps-scaling schedule
    scaling: list[float] = field(default_factory=lambda: [0.5])
    tol: list[float | None] = field(default_factory=lambda: [None])   # with the eps-scaling schedule
    # how to measure (not part of a point's key)
    repeats: int = 10
    warmup: int = 1
    timeout_s: float = 600.0
    memory_budget: int | None = None   # bytes for the dense pre-flight; None: the backend's own

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("blur", "p", "reach", "seed", "iters", "scaling", "tol"):
            if not getattr(self, name):
                raise KPBenchError(f"no {name} values given (use 'none' for reach/iters/tol)")
        _one_of("kind", [self.kind], KINDS)
        _one_of("op", self.ops, list(workloads.OPS))
        _one_of("backend", self.backends, backend_names())
        _one_of("kernel", self.kernels, KERNELS)
        _one_of("loss", self.losses, workloads.FLOW_LOSSES)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("device", self.device, DEVICES)
        _one_of("p", self.p, POWERS)
        for name in ("N", "D"):
            _positive_ints(name, getattr(self, name))
        if self.M != "same":
            _positive_ints("M", self.M)
        _positive_numbers("blur", self.blur)
        _positive_numbers("reach", [r for r in self.reach if r is not None])
        _positive_ints("iters", [i for i in self.iters if i is not None], allow_empty=True)
        _positive_numbers("tol", [t for t in self.tol if t is not None])
        if any(not 0 < s < 1 for s in self.scaling):
            raise KPBenchError(f"scaling must be in (0, 1), got {self.scaling}")
        if self.repeats < 1 or self.warmup < 0:
            raise KPBenchError(f"need repeats >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")
        if not self.timeout_s > 0:
            raise KPBenchError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise KPBenchError(f"memory_budget must be > 0 bytes, got {self.memory_budget}")


def expand(spec: SweepSpec) -> list[Point]:
    """All distinct points of ``spec``, in a deterministic order."""
    points: dict[Point, None] = {}
    for op in spec.ops:
        for backend in spec.backends:
            for variant in _op_variants(op, spec):
                for N in spec.N:
                    for M in ([N] if spec.M == "same" else spec.M):
                        for D in spec.D:
                            for blur in spec.blur:
                                for dtype in _dtypes(backend, spec):
                                    for device in spec.device:
                                        for seed in spec.seed:
                                            point = Point(
                                                op=op, backend=backend, N=int(N), M=int(M),
                                                D=int(D), blur=float(blur), dtype=dtype,
                                                device=device, seed=int(seed), **variant,
                                            )
                                            points[point] = None
    return list(points)


def _dtypes(backend: str, spec: SweepSpec) -> list[str]:
    # the reference backend has one dtype: it is the baseline every other dtype is compared to
    return [REFERENCE_DTYPE] if backend == REFERENCE_BACKEND else spec.dtype


def _op_variants(op: str, spec: SweepSpec) -> list[dict]:
    """The (kernel, p, reach, iters, scaling, tol) combinations that matter for ``op``."""
    info = workloads.OPS[op]
    names = spec.kernels if info.family == "kernel" else (
        spec.losses if info.family == "flow" else [info.family])
    variants = []
    for name in names:
        uses = workloads.op_fields(op, name)
        for p in (spec.p if "p" in uses else [None]):
            for reach in (spec.reach if "reach" in uses else [None]):
                for iters in (spec.iters if "iters" in uses else [None]):
                    # the scaling factor and the tolerance phase go with the eps-scaling schedule
                    scheduled = iters is None
                    scalings = spec.scaling if ("scaling" in uses and scheduled) else [None]
                    tols = spec.tol if ("tol" in uses and scheduled) else [None]
                    for scaling, tol in itertools.product(scalings, tols):
                        variants.append(dict(
                            kernel=name, p=None if p is None else int(p),
                            reach=None if reach is None else float(reach),
                            iters=None if iters is None else int(iters),
                            scaling=None if scaling is None else float(scaling),
                            tol=None if tol is None else float(tol),
                        ))
    return list({json.dumps(v, sort_keys=True): v for v in variants}.values())


# -- parsing -------------------------------------------------------------------

_RANGE = re.compile(r"^\s*([0-9.eE+]+)\s*\.\.\s*([0-9.eE+]+)\s*(?::\s*(\d+))?\s*$")


def parse_sizes(text: str | int | float | list) -> list[int]:
    """Sizes like "1e2..1e5", "1e2..1e5:7", "100,1000", or a list of those; >= 1."""
    values: list[int] = []
    for item in _items(text):
        if isinstance(item, (int, float)):
            values.append(_as_int(item, text))
            continue
        match = _RANGE.match(item)
        if match:
            values.extend(_log_range(float(match[1]), float(match[2]), match[3], text))
        else:
            values.append(_as_int(_number(item, text), text))
    _positive_ints("size", values)
    return list(dict.fromkeys(values))


def _log_range(lo: float, hi: float, count: str | None, text) -> list[int]:
    if not (lo >= 1 and hi >= lo):
        raise KPBenchError(f"bad range in {text!r}: need 1 <= start <= end")
    decades = math.log10(hi / lo)
    n = int(count) if count else max(1, int(round(decades)) + 1)
    if n < 1:
        raise KPBenchError(f"bad range in {text!r}: the count after ':' must be >= 1")
    if n == 1:
        return [int(round(lo))]
    return [int(round(lo * (hi / lo) ** (k / (n - 1)))) for k in range(n)]


def parse_floats(text, allow_none: bool = False) -> list[float | None]:
    """Numbers like "0.05,0.1" (and "none" where allowed)."""
    return [_maybe_none(item, float, allow_none, text) for item in _items(text)]


def parse_ints(text, allow_none: bool = False) -> list[int | None]:
    """Integers like "1,2" or "10,scaling" (scaling/none/conv = the eps-scaling schedule, where allowed)."""
    return [_maybe_none(item, lambda v: _as_int(_number(v, text), text), allow_none, text)
            for item in _items(text)]


def parse_words(text) -> list[str]:
    return [str(item).strip() for item in _items(text) if str(item).strip()]


def parse_bytes(text) -> int | None:
    """"2GiB", "512MB", "1e9", "none" -> bytes (None for none)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in NONE_WORDS):
        return None
    if isinstance(text, (int, float)):
        return int(text)
    match = re.match(r"^\s*([0-9.eE+]+)\s*([KMGT]?)(i?)B?\s*$", text, re.IGNORECASE)
    if not match:
        raise KPBenchError(f"cannot read a memory size from {text!r} (e.g. 2GiB, 512MB, 1e9)")
    base = 1024 if match[3] or match[2] == "" else 1000
    power = "KMGT".find(match[2].upper()) + 1 if match[2] else 0
    return int(float(match[1]) * base ** power)


def _items(text) -> list:
    if isinstance(text, (list, tuple)):
        out = []
        for item in text:
            out.extend(_items(item) if isinstance(item, str) else [item])
        return out
    if isinstance(text, str):
        return [part.strip() for part in text.split(",")]
    return [text]


def _maybe_none(item, convert: Callable, allow_none: bool, text):
    if item is None or (isinstance(item, str) and item.lower() in NONE_WORDS):
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


def _positive_ints(name: str, values, allow_empty: bool = False) -> None:
    if not values and not allow_empty:
        raise KPBenchError(f"no {name} values given")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise KPBenchError(f"{name} must be integers >= 1, got {v!r}")


def _positive_numbers(name: str, values) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise KPBenchError(f"{name} must be finite numbers > 0, got {v!r}")


# -- building a spec from a TOML table or command-line strings -----------------

_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ops": parse_words, "backends": parse_words, "kernels": parse_words, "losses": parse_words,
    "N": parse_sizes, "D": parse_sizes, "blur": parse_floats, "p": parse_ints,
    "reach": lambda v: parse_floats(v, allow_none=True), "dtype": parse_words,
    "device": parse_words, "seed": lambda v: [int(s) for s in parse_ints(v)],
    "iters": lambda v: parse_ints(v, allow_none=True), "scaling": parse_floats,
    "tol": lambda v: parse_floats(v, allow_none=True),
    "M": lambda v: "same" if isinstance(v, str) and v.strip().lower() == "same" else parse_sizes(v),
    "repeats": int, "warmup": int, "timeout_s": float, "memory_budget": parse_bytes,
    "kind": str,
}


def spec_from_dict(values: dict, where: str = "sweep spec") -> SweepSpec:
    """A SweepSpec from loosely typed values (TOML tables, parsed command-line strings)."""
    known = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KPBenchError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    parsed = {}
    for name, value in values.items():
        try:
            parsed[name] = _PARSERS[name](value)
        except (TypeError, ValueError) as exc:
            raise KPBenchError(f"{where}: bad value for {name!r}: {exc}") from exc
    return SweepSpec(**parsed)
