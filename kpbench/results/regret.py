"""The regret of ``backend="auto"``: the time of the backend it picks over the best backend's.

For every (op, configuration, N) of a store where two or more of auto's candidate
backends were timed, :func:`regret_records` asks the rule (kpbench.backends.auto.choose,
restricted to the backends timed there) what it would pick from a calibration table, and
divides that backend's median time by the fastest one's. A point is *seen* when the
table holds its (op, N, M, D, dtype, device), *unseen* otherwise (other sizes, other ops
mapped to their primitive, other blurs).
"""
from __future__ import annotations

import pathlib
import statistics

import pandas as pd

from kpbench.backends import auto
from kpbench.results.escape import plotly_text
from kpbench.results.format import config_label, fmt_n, fmt_seconds
from kpbench.results.layout import CALIBRATION_COPY
from kpbench.results.selection import cells, config_dict

TABLE_IN_STORE = CALIBRATION_COPY            # under a results folder
GOAL = 1.1
SUMMARY_HEADER = ["points", "count", "median regret", "max regret", f"share <= {GOAL}x"]


def store_table(results_dir: pathlib.Path) -> dict | None:
    """The calibration table copied into a results store by ``kpbench calibrate``."""
    path = pathlib.Path(results_dir) / TABLE_IN_STORE
    return auto.load_table(path) if path.is_file() else None


def regret_records(frame: pd.DataFrame, table: dict) -> list[dict]:
    seen = {tuple(p[f] for f in ("op", "N", "M", "D", "dtype", "device")) for p in table["points"]}
    timed: dict[tuple, dict] = {}
    for (op, config, backend, n), cell in cells(frame).items():
        if backend in auto.CANDIDATES and cell.time:
            timed.setdefault((op, config, n), {})[backend] = cell.time
    records = []
    for (op, config, n), times in sorted(timed.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2])):
        if len(times) < 2:
            continue
        c = config_dict(config)
        m = n if c["M_rel"] == "M=N" else c["M_rel"]
        choice = auto.choose(op, int(n), int(m), int(c["D"] or 3), c["dtype"], c["device"],
                             table=table, candidates=sorted(times))
        best = min(times, key=times.get)
        regret = times[choice.backend] / times[best]
        is_seen = (op, n, m, c["D"], c["dtype"], c["device"]) in seen
        records.append({"op": op, "N": int(n), "seen": "calibration points" if is_seen else "unseen points",
                        "pick": choice.backend, "best": best, "regret": regret,
                        "hover": "<br>".join(plotly_text(line) for line in (
                            f"{op} {config_label(c, op=op)} N={fmt_n(n)}",
                            f"auto: {choice.backend} {fmt_seconds(times[choice.backend])}, "
                            f"best: {best} {fmt_seconds(times[best])}",
                            f"regret {regret:.3f}x"))})
    return records


def regret_summary(records: list[dict]) -> list[list[str]]:
    rows = []
    for seen in ("calibration points", "unseen points"):
        values = [r["regret"] for r in records if r["seen"] == seen]
        if values:
            share = sum(v <= GOAL for v in values) / len(values)
            rows.append([seen, str(len(values)), f"{statistics.median(values):.3f}x",
                         f"{max(values):.3f}x", f"{share:.0%}"])
    return rows


__all__ = ["regret_records", "regret_summary", "store_table", "GOAL", "SUMMARY_HEADER", "TABLE_IN_STORE"]
