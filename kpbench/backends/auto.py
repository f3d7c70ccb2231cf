"""``backend="auto"``: the fastest available backend for a problem, from this machine's measurements.

``kpbench calibrate`` (kpbench.bench.calibrate) times the primitives of each torch-based
backend at a few sizes and writes a calibration table (JSON) to :func:`table_path`:
``$KPBENCH_CALIBRATION`` if set, else ``~/.cache/kpbench/calibration.json``.
``get_backend("auto", op=, N=, M=, D=, dtype=, device=)`` then calls :func:`resolve`.

The rule, for a problem (op, N, M, D, dtype, device):

1. candidates: the torch-based backends (torch, keops, cuda; never the numpy reference,
   whose losses take another array type) available here and supporting the dtype, the
   device and, for a ``*_grad`` op, autograd;
2. table entries: those of the op itself, else of its primitive (a loss maps to the
   primitive it is written on: mmd/energy -> kernel_product, sinkhorn/hausdorff/
   log_likelihood -> softmin), same device, same dtype (else the other dtype), nearest D;
3. per candidate, its time at N*M is interpolated log-log between the calibration sizes
   (constant below the smallest, extrapolated from the last two above the largest); a
   backend that failed (oom, skipped by the memory pre-flight, timeout) at a size <= N*M
   is out beyond it;
4. the candidate with the lowest estimate wins.

Without a table, or without any entry for the problem, the documented default rule
applies: dense ``torch`` while N*M <= 4e6 (N = M = 2000), ``keops`` beyond when it is
available, else ``torch`` (a guess from KeOps' published crossover, not a measurement).
Every choice is logged (logger ``kpbench.auto``, level INFO) and kept in
:data:`last_choice` with its reason; :func:`choose` returns it without loading a backend.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
import pathlib
from dataclasses import dataclass, field

from kpbench.errors import KPBenchError

from .losses_table import primitive_of

log = logging.getLogger("kpbench.auto")

CANDIDATES = ("torch", "keops", "cuda")
DENSE_MAX_SIZE = 4e6          # the default rule: dense torch up to N*M = 4e6
FAILED = ("oom", "skipped", "timeout")
TABLE_VERSION = 1


def table_path() -> pathlib.Path:
    """Where the calibration table lives: $KPBENCH_CALIBRATION, else ~/.cache/kpbench/."""
    env = os.environ.get("KPBENCH_CALIBRATION")
    if env:
        return pathlib.Path(env).expanduser()
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "kpbench" / "calibration.json"


def load_table(path: str | os.PathLike | None = None) -> dict | None:
    """The calibration table at ``path`` (default :func:`table_path`), None if absent."""
    path = pathlib.Path(path) if path is not None else table_path()
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KPBenchError(f"calibration table {path} is unreadable ({exc}); rerun `kpbench calibrate`") from exc
    if table.get("version") != TABLE_VERSION or not isinstance(table.get("points"), list):
        raise KPBenchError(f"calibration table {path} has another format; rerun `kpbench calibrate`")
    return table


@dataclass
class Choice:
    backend: str
    reason: str
    estimates: dict = field(default_factory=dict)   # backend -> estimated seconds (calibrated)
    calibrated: bool = False


last_choice: Choice | None = None


def choose(op: str, N: int, M: int | None = None, D: int = 3, dtype: str = "float32",
           device: str = "cpu", table: dict | None = None, candidates=None) -> Choice:
    """The backend the rule picks (see the module doc); ``candidates`` default: those
    available here; ``table`` default: the calibration table, if there is one."""
    _check_problem(op, N, M, D)
    N, M = int(N), int(N if M is None else M)
    names = list(candidates) if candidates is not None else available_candidates(op, dtype, device)
    if not names:
        raise KPBenchError(f"backend='auto': no backend available for {op} in {dtype} on {device}")
    table = table if table is not None else load_table()
    entries = _entries(table, op, D, dtype, device) if table else []
    estimates = {b: _estimate(entries, b, N * M) for b in names}
    estimates = {b: t for b, t in estimates.items() if t is not None}
    if estimates:
        best = min(estimates, key=estimates.get)
        if math.isfinite(estimates[best]):
            others = ", ".join(f"{b} {_seconds(t)}" for b, t in sorted(estimates.items(), key=lambda kv: kv[1]) if b != best)
            return Choice(best, f"calibrated: {best} estimated {_seconds(estimates[best])}"
                                + (f" (vs {others})" if others else ""), estimates, True)
    return default_choice(N * M, names, "no calibration table" if not table else "no calibrated entry")


def default_choice(size: float, names: list[str], why: str) -> Choice:
    """The rule without measurements: dense torch up to N*M = 4e6, keops beyond."""
    if size > DENSE_MAX_SIZE and "keops" in names:
        return Choice("keops", f"default rule ({why}): keops beyond N*M = {DENSE_MAX_SIZE:g}")
    pick = "torch" if "torch" in names else names[0]
    return Choice(pick, f"default rule ({why}): {pick} up to N*M = {DENSE_MAX_SIZE:g}"
                  + ("" if pick == "torch" else " (torch unavailable)"))


def resolve(op: str | None = None, N: int | None = None, M: int | None = None, D: int | None = None,
            dtype: str | None = None, device: str | None = None):
    """The Backend ``get_backend("auto", ...)`` returns; logs and records the choice."""
    global last_choice
    from . import get_backend

    if op is None or N is None:
        raise KPBenchError("backend='auto' needs the problem: get_backend('auto', op=, N=, M=, D=, "
                           "dtype=, device=)")
    choice = choose(op, N, M, D or 3, _dtype_name(dtype), _device_kind(device))
    last_choice = choice
    log.info("backend='auto' picked %s for %s N=%s M=%s D=%s %s %s: %s", choice.backend, op, N,
             M if M is not None else N, D, dtype, device, choice.reason)
    return get_backend(choice.backend)


def available_candidates(op: str, dtype: str, device: str) -> list[str]:
    from . import availability, get_backend

    names = []
    for name, (ok, _why) in availability().items():
        if name not in CANDIDATES or not ok:
            continue
        caps = get_backend(name).capabilities
        if getattr(caps, dtype, False) and (device == "cpu" or caps.cuda) and (
                not op.endswith("_grad") or caps.autograd):
            names.append(name)
    return names


def _dtype_name(dtype) -> str:
    """'float32' from 'float32', torch.float32 or numpy.float32 (None: float32)."""
    return "float32" if dtype is None else str(getattr(dtype, "__name__", dtype)).replace("torch.", "")


def _device_kind(device) -> str:
    return "cuda" if device is not None and str(device).startswith("cuda") else "cpu"


def _check_problem(op, N, M, D) -> None:
    for name, v in (("N", N), ("M", M), ("D", D)):
        if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1):
            raise KPBenchError(f"backend='auto': {name} must be a positive integer, got {v!r}")
    if not isinstance(op, str) or not op:
        raise KPBenchError(f"backend='auto': op must be an op or loss name, got {op!r}")


def _entries(table: dict, op: str, D: int, dtype: str, device: str) -> list[dict]:
    """The table points for the problem: op (else its primitive), device, dtype (else the
    other), nearest D."""
    points = [p for p in table["points"] if p["device"] == device]
    for name in _op_names(op):
        of_op = [p for p in points if p["op"] == name]
        same = [p for p in of_op if p["dtype"] == dtype] or of_op
        if same:
            nearest = min({p["D"] for p in same}, key=lambda d: abs(math.log(d / D)))
            return [p for p in same if p["D"] == nearest]
    return []


def _op_names(op: str) -> list[str]:
    names = [op]
    base = op.removesuffix("_grad")
    if base != op:
        names.append(base)
    primitive = primitive_of(base)
    if primitive:
        names += [primitive + "_grad", primitive] if op.endswith("_grad") else [primitive]
    return names


def _estimate(entries: list[dict], backend: str, size: float) -> float | None:
    """Log-log interpolated seconds at N*M = size (inf beyond a failure, None: never timed)."""
    ok = sorted((p["N"] * p["M"], p["times"][backend]) for p in entries
                if p["times"].get(backend) is not None)
    failures = [p["N"] * p["M"] for p in entries if p.get("failed", {}).get(backend) in FAILED]
    if failures and size >= min(failures):
        return math.inf
    if not ok:
        return None
    if size <= ok[0][0] or len(ok) == 1:
        return ok[0][1] if size <= ok[0][0] else ok[-1][1] * size / ok[-1][0]
    for (s0, t0), (s1, t1) in zip(ok, ok[1:]):
        if size <= s1:
            return _loglog(size, s0, t0, s1, t1)
    (s0, t0), (s1, t1) = ok[-2], ok[-1]
    return max(t1, _loglog(size, s0, t0, s1, t1))


def _loglog(s, s0, t0, s1, t1) -> float:
    if s1 == s0:
        return t1
    w = (math.log(s) - math.log(s0)) / (math.log(s1) - math.log(s0))
    return math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))


def _seconds(t: float) -> str:
    if not math.isfinite(t):
        return "refused/failed at this size"
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


__all__ = ["Choice", "choose", "default_choice", "load_table", "resolve", "table_path",
           "last_choice", "CANDIDATES", "DENSE_MAX_SIZE"]
