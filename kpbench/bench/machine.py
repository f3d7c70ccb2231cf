"""The machine's limits: the rates that bound kpbench's computations, measured on the CPU
(cached per host) or read from the device table (:mod:`kpbench.devices`) on a GPU.

Measured, each with one thread and with all the CPUs this process may use, by torch (the
library every backend of this suite links), median of ``REPEATS`` samples of at least
``SAMPLE_S`` seconds each (the calls per sample calibrated first):

* ``exp_<dtype>``: ``torch.exp(x, out=y)`` on 2**18 elements (1 MiB in float32: in the L2
  cache), elements per second: the vectorised exponential's throughput.
* ``fma_<dtype>``: ``torch.mm(a, b, out=c)`` on 384 x 384 matrices, n**3 multiply-adds per
  call: the BLAS peak, the most multiply-adds per second this core does.
* ``read``: ``x.sum()`` over ``BANDWIDTH_BYTES`` (128 MiB) of float32, bytes read per second.
* ``copy``: ``y.copy_(x)`` of 128 MiB, bytes read + written per second (write-allocate
  traffic not counted). On a CPU whose last-level cache holds 128 MiB (this project's
  machine: 480 MiB L3) both are that cache's bandwidth, not DRAM's: the limit then holds for
  working sets of that size, and a larger one may run slower than it.

The cache file (``$KPBENCH_LIMITS``, else ``~/.cache/kpbench/limits-<host>.json``) is read as
hostile input: a file of another host or CPU, another version, or with a rate that is not a
positive finite number in a plausible range is refused (and measured again by the sweep).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import pathlib
import re
import statistics

from kpbench.errors import KPBenchError

VERSION = 1
REPEATS = 5
SAMPLE_S = 0.02
EXP_ELEMENTS = 1 << 18
MM_SIZE = 384
BANDWIDTH_BYTES = 128 << 20
DTYPES = ("float32", "float64")
RATE_NAMES = tuple(f"{kind}_{dtype}" for kind in ("exp", "fma") for dtype in DTYPES) + ("read", "copy")
PLAUSIBLE = (1e3, 1e16)        # per second: anything outside is not a measurement of a machine
THREADINGS = ("1", "all")


# -- measuring ------------------------------------------------------------------------
def _median_rate(call, work: float) -> float:
    """``work`` units per call / the median seconds per call, over REPEATS samples (the
    calls per sample calibrated as the sweep's are)."""
    from kpbench.bench.measure import WallTimer, calibrate_number

    timer = WallTimer()
    call()
    number = calibrate_number(call, timer, SAMPLE_S)
    samples = [timer.time_many(call, number) / number for _ in range(REPEATS)]
    return work / statistics.median(samples)


def _rates() -> dict[str, float]:
    import torch

    rates = {}
    for dtype in DTYPES:
        kind = getattr(torch, dtype)
        x = torch.rand(EXP_ELEMENTS, dtype=kind)
        y = torch.empty_like(x)
        rates[f"exp_{dtype}"] = _median_rate(lambda: torch.exp(x, out=y), EXP_ELEMENTS)
        a, b = (torch.rand(MM_SIZE, MM_SIZE, dtype=kind) for _ in range(2))
        c = torch.empty_like(a)
        rates[f"fma_{dtype}"] = _median_rate(lambda: torch.mm(a, b, out=c), MM_SIZE ** 3)
    x = torch.ones(BANDWIDTH_BYTES // 4, dtype=torch.float32)
    y = torch.empty_like(x)
    rates["read"] = _median_rate(lambda: x.sum(), BANDWIDTH_BYTES)
    rates["copy"] = _median_rate(lambda: y.copy_(x), 2 * BANDWIDTH_BYTES)
    return rates


def all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure() -> dict:
    """This machine's limits (a few seconds): {"rates": {"1": {...}, "all": {...}}, ...}."""
    import torch

    from kpbench.results.meta import host_metadata

    meta = host_metadata()
    before = torch.get_num_threads()
    rates = {}
    try:
        for threading, n in (("1", 1), ("all", all_threads())):
            torch.set_num_threads(n)
            rates[threading] = _rates()
    finally:
        torch.set_num_threads(before)
    return {"version": VERSION, "host": meta["host"], "cpu": meta["cpu"],
            "torch_version": meta["torch_version"], "threads_all": all_threads(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": f"torch; median of {REPEATS} samples >= {SAMPLE_S} s; exp on {EXP_ELEMENTS} "
                      f"elements, fma = mm {MM_SIZE}^3, read = sum, copy = copy_ of "
                      f"{BANDWIDTH_BYTES >> 20} MiB",
            "rates": rates}


# -- the cache ----------------------------------------------------------------------------
def cache_path(host: str | None = None) -> pathlib.Path:
    env = os.environ.get("KPBENCH_LIMITS")
    if env:
        return pathlib.Path(env).expanduser()
    if host is None:
        from kpbench.results.meta import host_metadata

        host = host_metadata()["host"]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(host))[:64] or "host"
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "kpbench" / f"limits-{safe}.json"


def validate(limits, host: str, cpu: str | None) -> dict:
    """``limits`` if it is a limits table of this host and CPU, else a KPBenchError saying why."""
    if not isinstance(limits, dict):
        raise KPBenchError("not a JSON object")
    if limits.get("version") != VERSION:
        raise KPBenchError(f"version {limits.get('version')!r}, expected {VERSION}")
    if limits.get("host") != host or limits.get("cpu") != cpu:
        raise KPBenchError(f"measured on {limits.get('host')!r} ({limits.get('cpu')!r}), "
                           f"not on this machine {host!r} ({cpu!r})")
    threads_all = limits.get("threads_all")
    if type(threads_all) is not int or not 1 <= threads_all <= 1 << 16:
        raise KPBenchError(f"threads_all {threads_all!r} is not a thread count")
    rates = limits.get("rates")
    if not isinstance(rates, dict) or set(rates) != set(THREADINGS):
        raise KPBenchError(f"rates must hold exactly {THREADINGS}")
    for threading in THREADINGS:
        table = rates[threading]
        if not isinstance(table, dict) or set(table) != set(RATE_NAMES):
            raise KPBenchError(f"rates[{threading!r}] must hold exactly {RATE_NAMES}")
        for name, rate in table.items():
            if type(rate) is not float or not math.isfinite(rate) or not PLAUSIBLE[0] <= rate <= PLAUSIBLE[1]:
                raise KPBenchError(f"rates[{threading!r}][{name!r}] = {rate!r} is not a rate "
                                   f"in {PLAUSIBLE[0]:g}..{PLAUSIBLE[1]:g} per second")
    return limits


def load(path: pathlib.Path | None = None) -> dict | None:
    """The cached limits of this machine; None if absent. KPBenchError if unusable."""
    from kpbench.results.meta import host_metadata

    meta = host_metadata()
    path = path or cache_path(meta["host"])
    if not path.is_file():
        return None
    try:
        limits = json.loads(path.read_text(encoding="utf-8"))
        return validate(limits, meta["host"], meta["cpu"])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise KPBenchError(f"machine limits {path}: unreadable ({type(exc).__name__}: {exc})") from exc
    except KPBenchError as exc:
        raise KPBenchError(f"machine limits {path}: {exc}") from exc


def save(limits: dict, path: pathlib.Path | None = None) -> pathlib.Path:
    """Written whole, then renamed over the old file (never through a link)."""
    path = path or cache_path(limits["host"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(limits, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def cached_or_measured(warn=None) -> dict:
    """The cached limits, else measured now and cached (an unusable cache is measured
    again, ``warn`` told why)."""
    try:
        limits = load()
    except KPBenchError as exc:
        if warn:
            warn(f"{exc}; measuring again")
        limits = None
    if limits is None:
        limits = measure()
        try:
            save(limits)
        except OSError as exc:
            if warn:
                warn(f"machine limits not cached ({exc})")
    return limits


def lines(limits: dict) -> list[str]:
    """The limits, one line per threading, for people."""
    out = [f"machine limits of {limits['host']} ({limits['cpu']}), {limits['method']}:"]
    for threading in THREADINGS:
        r = limits["rates"][threading]
        n = 1 if threading == "1" else limits["threads_all"]
        out.append(f"  {n} thread{'s' if n > 1 else ''}: exp {r['exp_float32']:.3g}/s (f32), "
                   f"{r['exp_float64']:.3g}/s (f64); FMA {r['fma_float32']:.3g}/s (f32), "
                   f"{r['fma_float64']:.3g}/s (f64); read {r['read'] / 1e9:.1f} GB/s, "
                   f"copy (read+write) {r['copy'] / 1e9:.1f} GB/s")
    slower = sorted(k for k, v in limits["rates"]["all"].items() if v < limits["rates"]["1"][k])
    if slower:
        out.append(f"  warning: all threads measured slower than one for {', '.join(slower)}: other "
                   "work shared the CPUs (rows on several threads use the one-thread rate there)")
    return out
