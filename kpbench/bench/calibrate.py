"""``kpbench calibrate``: a short speed sweep of the torch-based backends, stored as the table
``backend="auto"`` picks from (see :mod:`kpbench.backends.auto` for the rule).

The sweep (default: kernel_product and softmin, N = M = 1e2..1e4 in 5 sizes, D=3,
float32 on the CPU, every available backend of torch/keops/cuda) runs like any other
and its rows land in the results store (``--out``, default ``results``). The table
(JSON) holds, per op/dtype/device/D/N/M, each backend's median time or failure status,
the crossovers read from them, and the machine it was measured on. It is written to
:func:`kpbench.backends.auto.table_path` (``$KPBENCH_CALIBRATION``, else
``~/.cache/kpbench/calibration.json``) or ``--table``, and copied to
``<out>/calibration/calibration.json`` so that the report can show auto's regret.

``kpbench calibrate --limits`` measures instead this machine's limits (exp/s, FMA/s,
memory bandwidth; one thread and all threads; a few seconds) and caches them per host
(:mod:`kpbench.bench.machine`): every speed row's ``limit_s``/``limit_frac`` are read from
them (a speed sweep on a machine without them measures them first).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import pathlib
import sys

import pandas as pd

from kpbench.backends import auto
from kpbench.results.format import value
from kpbench.results.regret import TABLE_IN_STORE as STORE_COPY

DEFAULT_OPS = ("kernel_product", "softmin")
DEFAULT_N = "1e2..1e4:5"
POINT_FIELDS = ("op", "N", "M", "D", "dtype", "device")


def table_points(frame: pd.DataFrame) -> list[dict]:
    """Per (op, N, M, D, dtype, device): {backend: median seconds} and {backend: status}
    of the candidate backends' speed rows."""
    rows = frame[frame["backend"].isin(auto.CANDIDATES) & (frame["sweep"] == "speed")]
    points = []
    for key, group in rows.groupby(list(POINT_FIELDS), sort=True):
        point = {name: value(v) for name, v in zip(POINT_FIELDS, key)}
        ok = group[group["status"] == "ok"]
        point["times"] = {b: float(t) for b, t in ok.groupby("backend")["time_median_s"].median().items()}
        point["failed"] = {r["backend"]: r["status"] for r in group.to_dict("records")
                           if r["status"] in auto.FAILED and r["backend"] not in point["times"]}
        points.append(point)
    return points


def crossovers(points: list[dict]) -> list[dict]:
    """Per (op, dtype, device, D): the fastest backend over consecutive N ranges."""
    groups: dict[tuple, list] = {}
    for p in points:
        if len(p["times"]) >= 2:
            groups.setdefault((p["op"], p["dtype"], p["device"], p["D"]), []).append(p)
    result = []
    for (op, dtype, device, D), group in sorted(groups.items()):
        runs: list[dict] = []
        for p in sorted(group, key=lambda p: p["N"] * p["M"]):
            best = min(p["times"], key=p["times"].get)
            if runs and runs[-1]["backend"] == best:
                runs[-1]["N_to"] = p["N"]
            else:
                runs.append({"op": op, "dtype": dtype, "device": device, "D": D,
                             "backend": best, "N_from": p["N"], "N_to": p["N"]})
        result += runs
    return result


def build_table(frame: pd.DataFrame) -> dict:
    """The calibration table of one run's rows."""
    points = table_points(frame)
    first = frame.iloc[0]
    return {
        "version": auto.TABLE_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": value(first.get("run_id")), "host": value(first.get("host")),
        "cpu": value(first.get("cpu")), "gpu": value(first.get("gpu")),
        "torch_version": value(first.get("torch_version")),
        "pykeops_version": value(first.get("pykeops_version")),
        "points": points, "crossovers": crossovers(points),
    }


def write_table(table: dict, *paths: pathlib.Path) -> None:
    text = json.dumps(table, indent=1, sort_keys=True)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def crossover_lines(table: dict) -> list[str]:
    lines = []
    for c in table["crossovers"]:
        lines.append(f"{c['op']} {c['dtype']} {c['device']} D={c['D']}: {c['backend']} fastest "
                     f"for N={c['N_from']}..{c['N_to']}")
    return lines or ["no point where two backends were timed: auto will use its default rule"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="time the backends on this machine; backend='auto' picks from it",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="results store for the sweep rows (default results)")
    parser.add_argument("--table", default=None, help=f"where the table goes (default {auto.table_path()})")
    parser.add_argument("--ops", default=",".join(DEFAULT_OPS), help="ops to time (default kernel_product,softmin)")
    parser.add_argument("--backends", default=None, help="default: the available ones of torch,keops,cuda")
    parser.add_argument("--N", default=DEFAULT_N, help=f"sizes, M = N (default {DEFAULT_N})")
    parser.add_argument("--D", default="3", help="dimensions (default 3)")
    parser.add_argument("--dtype", default="float32", help="dtypes (default float32)")
    parser.add_argument("--device", default="cpu", help="devices (default cpu)")
    parser.add_argument("--repeats", default="5", help="timed samples per point (default 5)")
    parser.add_argument("--executor", choices=("inline", "ray"), default="inline")
    parser.add_argument("--limits", action="store_true",
                        help="instead: measure this machine's limits (exp/s, FMA/s, GB/s; 1 thread "
                             "and all threads; a few seconds), cache them per host (speed rows' "
                             "limit_s reads them) and print them with the GPU's device table entry")
    parser.set_defaults(func=run)


def run_limits() -> int:
    from kpbench import devices
    from kpbench.results.meta import gpu_name
    from kpbench.bench import machine

    limits = machine.measure()
    try:
        path = machine.save(limits)
    except OSError as exc:
        print(f"kpbench calibrate: error: cannot cache the limits ({exc})", file=sys.stderr)
        return 2
    print("\n".join(machine.lines(limits)))
    gpu = gpu_name()
    if gpu:
        device = devices.find(gpu)
        print(f"GPU {gpu}: " + (f"device table {device.name}: {device.sms} SMs at "
                                f"{device.clock_hz / 1e9:.2f} GHz, FMA {device.fma_per_s:.3g}/s, "
                                f"exp {device.exp_per_s:.3g}/s, {device.bandwidth / 1e9:.0f} GB/s"
                                if device else "not in the device table (no limit for its rows)"))
    print(f"machine limits: {path}")
    return 0


def run(args) -> int:
    if args.limits:
        return run_limits()
    from kpbench.errors import KPBenchError
    from kpbench.results.selection import load_run
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.settings import Settings
    from kpbench.bench.sweep import run_sweep

    try:
        backends = args.backends or ",".join(auto.available_candidates("kernel_product", "float32", "cpu"))
        spec, measured = sweep_from_dict(dict(kind="speed", ops=args.ops, backends=backends, N=args.N, D=args.D,
                                   dtype=args.dtype, device=args.device, repeats=args.repeats,
                                   blur="0.1", p="2"), where="kpbench calibrate")
        result = run_sweep(spec, Settings(executor=args.executor, out=args.out, resume=False, **measured))
        table = build_table(load_run(args.out, result.run_id))
    except KPBenchError as exc:
        print(f"kpbench calibrate: error: {exc}", file=sys.stderr)
        return 2
    path = pathlib.Path(args.table).expanduser() if args.table else auto.table_path()
    write_table(table, path, pathlib.Path(args.out) / STORE_COPY)
    print(result.summary())
    print("\n".join(crossover_lines(table)))
    print(f"calibration table: {path} (copy in {pathlib.Path(args.out) / STORE_COPY})")
    return 0


__all__ = ["build_table", "crossovers", "table_points", "write_table", "STORE_COPY"]
