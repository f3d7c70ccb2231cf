"""What a sweep measures: a :class:`SweepSpec` (axes only) expanded into :class:`Point` s
with stable keys, and which of them a resumed sweep skips.

:func:`expand` takes the cartesian product of the axes and collapses those an op does not
use (a kernel-product point has no ``p``, every Sinkhorn point has kernel ``"sinkhorn"``,
a flow_step point has a ``loss`` and no kernel, ...), so no two points measure the same thing.
How the points are measured (repeats, timeouts, threads ...) is not here: see
:class:`kpbench.bench.settings.Settings`; the text forms (ranges, TOML) are read by
:mod:`kpbench.bench.parse`.

The numpy backend is the float64 reference: its points are always float64, whatever
``dtype`` lists (so ``--backends numpy,torch --dtype float32`` times torch in float32
against the float64 baseline). Other backends lacking a dtype give ``unsupported`` rows.

Limits, checked before anything runs (a bad spec is a KPBenchError naming the key or
flag, the value and what is allowed; :mod:`kpbench.bench.checks`): N, M, D and iters are
whole numbers from 1 to 2**31-1 (the CUDA kernels and KeOps index with 32-bit ints); seeds
from 0 to 2**32-1 (numpy's seeds); a range expression gives at most 10,000 values and a
sweep at most 10,000 points (both counted without materialising them); offsets within
+-1e30 and scales from 1e-30 to 1e30, accuracy sweeps only (see ``Point.offset``).

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
from dataclasses import dataclass, field

from kpbench.errors import KPBenchError
from kpbench.results.schema import POINT_COLUMNS, split_loss
from kpbench.results.store import SWEEPS, ResultStore, latest_per_key
from kpbench.bench import ops
from kpbench.bench.checks import AXIS_CHECKS
from kpbench.bench.limits import MAX_POINTS

REFERENCE_BACKEND, REFERENCE_DTYPE = "numpy", "float64"
DEFAULT_D = 3
FAILED = ("error", "timeout", "oom")


@dataclass(frozen=True)
class Point:
    """One sweep point: the POINT_COLUMNS of a row (None = does not apply to this op)."""

    op: str
    backend: str
    kernel: str | None
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
    loss: str | None = None          # the loss of a loss op (flow_step); its kernel is None

    def as_row(self) -> dict:
        return dataclasses.asdict(self)

    def key(self, kind: str) -> str:
        return point_key(kind, self.as_row())

    @property
    def eps(self) -> float | None:
        return self.blur ** self.p if self.p is not None else None


def point_from_fields(fields: dict) -> Point:
    """The Point of stored or sent fields (other keys ignored; a loss op's loss in ``kernel``,
    as stored before the ``loss`` column, moved to ``loss``)."""
    names = [f.name for f in dataclasses.fields(Point)]
    values = {name: fields.get(name) for name in names}
    values["kernel"], values["loss"] = split_loss(values["op"], values["kernel"], values["loss"])
    return Point(**values)


def legacy_fields(point: Point) -> dict:
    """``point`` as a kpbench from before the ``loss`` column wrote it (the loss in ``kernel``),
    the later columns left out where unset (a worker from before them takes no such field):
    what an interleaved worker of any version reads."""
    row = {name: value for name, value in point.as_row().items()
           if not (name in KEY_ONLY_WHEN_SET and _unset(value))}
    loss = row.pop("loss")
    return {**row, "kernel": loss} if loss is not None else row


# point columns added after rows were stored: left out of the key when null, so that the
# keys of those rows (and of every point that does not use the column) stay what they were
KEY_ONLY_WHEN_SET = ("tol", "offset", "scale", "data")


def _unset(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def point_key(kind: str, fields: dict) -> str:
    """A stable hex key of (kind, point fields); the same on every machine and Python."""
    # The loss column came after rows were stored, when a loss op's loss was in "kernel": the
    # key hashes the loss under "kernel" and never a "loss", so those rows keep their keys.
    kernel, loss = split_loss(fields.get("op"), fields.get("kernel"), fields.get("loss"))
    fields = {**fields, "kernel": kernel if _unset(loss) else loss}
    # floats as repr so 1.0 (a float column) and 1 (an int column) never collide
    canonical = {"kind": kind, **{
        name: repr(v) if isinstance(v := fields.get(name), float) else v
        for name in POINT_COLUMNS if name != "loss"
        and not (name in KEY_ONLY_WHEN_SET and _unset(fields.get(name)))}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SweepSpec:
    """The axes of a sweep (lists of values) and the kind of measure."""

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

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every axis within its type and limits, then the number of points (KPBenchError)."""
        for name, check in AXIS_CHECKS.items():
            check(getattr(self, name))
        _check_conditioning(self)
        points = count_points(self)
        if points > MAX_POINTS:
            raise KPBenchError(
                f"the sweep has {points} points, more than the {MAX_POINTS} allowed per sweep; "
                "use fewer values (or split it into several [[sweep]] tables)")


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


def expand(spec: SweepSpec) -> list[Point]:
    """All distinct points of ``spec``, in a deterministic order."""
    points: dict[Point, None] = {}
    for op, backend in itertools.product(spec.ops, spec.backends):
        shapes = [(N, M) for N in spec.N for M in ([N] if spec.M == "same" else spec.M)]
        for variant, (N, M), (data, D), blur, dtype, device, seed, offset, scale in itertools.product(
                _op_variants(op, spec), shapes, data_dims(spec), spec.blur, _dtypes(backend, spec),
                spec.device, spec.seed, spec.offsets, spec.scales):
            points[Point(op=op, backend=backend, N=int(N), M=int(M), D=int(D), blur=float(blur),
                         dtype=dtype, device=device, seed=int(seed), data=data, **variant,
                         offset=_float_or_none(offset), scale=_float_or_none(scale))] = None
    return list(points)


def _float_or_none(v) -> float | None:
    return None if v is None else float(v)


def _int_or_none(v) -> int | None:
    return None if v is None else int(v)


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
    """The (kernel or loss, p, reach, iters, scaling, tol) combinations that matter for ``op``."""
    variants = []
    for name, axes in _variant_axes(op, spec):
        named = {"kernel": None, "loss": name} if ops.OPS[op].family == "flow" else {"kernel": name}
        for p, reach, iters in itertools.product(axes["p"], axes["reach"], axes["iters"]):
            # the scaling factor and the tolerance phase go with the eps-scaling schedule
            scheduled = iters is None
            for scaling, tol in itertools.product(axes["scaling"] if scheduled else [None],
                                                  axes["tol"] if scheduled else [None]):
                variants.append(dict(named, p=_int_or_none(p), reach=_float_or_none(reach),
                                     iters=_int_or_none(iters), scaling=_float_or_none(scaling),
                                     tol=_float_or_none(tol)))
    return list({json.dumps(v, sort_keys=True): v for v in variants}.values())


def _variant_axes(op: str, spec: SweepSpec) -> list[tuple[str, dict]]:
    """(kernel or loss name, {axis: values}) of ``op``: the axes it does not use hold [None]."""
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


def pending(spec: SweepSpec, points: list | None, stores, retry_failed: bool, resume: bool) -> tuple:
    """(every point: ``points`` or the spec's, those not stored yet in all of ``stores``)."""
    points = expand(spec) if points is None else points
    done = set.intersection(*(done_keys(s, retry_failed) for s in stores)) if resume else set()
    return points, [p for p in points if p.key(spec.kind) not in done]


def done_keys(store: ResultStore, retry_failed: bool = False) -> set[str]:
    """Keys a resumed sweep skips: every stored key, or with ``retry_failed`` those whose
    latest row is not ``retryable`` (rows from before that column: failed = retryable)."""
    if not retry_failed:
        return store.keys(SWEEPS)
    rows = store.read(SWEEPS, columns=["key", "status", "retryable", "started_at"])
    if rows.empty:
        return set()
    rows = latest_per_key(rows)
    retry = rows["retryable"].astype("boolean").fillna(rows["status"].isin(FAILED))
    return set(rows.loc[~retry.astype(bool), "key"])
