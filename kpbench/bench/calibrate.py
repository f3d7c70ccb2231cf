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

import datetime as _dt
import json
import pathlib

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


__all__ = ["build_table", "crossovers", "table_points", "write_table", "STORE_COPY"]
