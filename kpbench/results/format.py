"""Numbers and labels as the report, the compare table and the pages write them.

One home for every formatter the results layer shares: sizes (``fmt_n``: 1000 -> 1e3),
times, bytes, errors, ratios, and the labels that name a configuration or a sweep point.
Nothing here reads a store or draws a figure.
"""
from __future__ import annotations

import math

import pandas as pd

from kpbench.errors import format_bytes
from kpbench.results.schema import split_loss

# What, besides op, backend and N, makes two rows the same benchmark configuration.
# "M" enters as M_rel ("M=N" or the value of M) so that the usual M = N sweep is one group.
CONFIG_COLUMNS = ["kernel", "loss", "M_rel", "D", "blur", "p", "reach", "iters", "scaling", "tol", "offset",
                  "scale", "dtype", "device", "data"]   # data: the data source (null: the default pair)
BACKEND_ORDER = ("numpy", "torch", "keops", "cuda")


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def value(v):
    """A plain Python value, with NaN/NA -> None (for grouping keys and labels)."""
    if missing(v):
        return None
    if hasattr(v, "item") and not isinstance(v, pd.Timestamp):
        v = v.item()  # numpy scalar -> int/float/str
    return v


def number(v) -> float | None:
    """A finite float, or None (for a null, NaN, inf or non-number)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def text(v) -> str:
    v = value(v)
    return "-" if v is None else str(v)


def fmt_n(n) -> str:
    """1000 -> 1e3, 4000 -> 4e3, 200 -> 200, 1500 -> 1500."""
    n = int(n)
    if n >= 1000:
        exponent = int(math.floor(math.log10(n)))
        mantissa, rest = divmod(n, 10**exponent)
        if rest == 0:
            return f"{mantissa}e{exponent}"
    return str(n)


def fmt_seconds(t) -> str:
    if missing(t):
        return "-"
    t = float(t)
    if t < 1e-3:
        return f"{t * 1e6:.3g} µs"
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    return f"{t:.3g} s"


def fmt_bytes(n) -> str:
    return "-" if missing(n) else format_bytes(float(n))


def fmt_err(e) -> str:
    return "-" if missing(e) else f"{float(e):.1e}"


def fmt_ratio(r) -> str:
    return "-" if missing(r) else f"{float(r):.3g}x"


def fmt_percent(r) -> str:
    return "-" if missing(r) else f"{100 * float(r):.3g} %"


def fmt_number(v) -> str:
    v = value(v)
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def backend_sort_key(name: str):
    return (BACKEND_ORDER.index(name) if name in BACKEND_ORDER else len(BACKEND_ORDER), name)


def backend_label(backend: str, device) -> str:
    """The backend's name, marked when the cuda backend ran on the host (device cpu:
    KPBENCH_CUDA_HOST=1, correctness only) so it never passes for a GPU figure."""
    return f"{backend} (host execution)" if backend == "cuda" and device == "cpu" else str(backend)


def row_config(row) -> dict:
    """The CONFIG_COLUMNS of a row (a dict or a pandas row), nulls as None."""
    config = {name: value(row.get(name)) for name in CONFIG_COLUMNS if name != "M_rel"}
    # rows stored before the loss column held a loss op's loss in kernel
    config["kernel"], config["loss"] = split_loss(value(row.get("op")), config["kernel"], config["loss"])
    n, m = value(row.get("N")), value(row.get("M"))
    config["M_rel"] = "M=N" if m is None or m == n else int(m)
    return config


def config_label(config: dict, only: list[str] | None = None, op: str | None = None) -> str:
    """'gaussian D=3 blur=0.1 p=2 float32 cpu' from a config dict; nulls are left out, and so
    is a kernel that only repeats the op's family (softmin/softmin, sinkhorn_grad/sinkhorn)."""
    parts = []
    for name in CONFIG_COLUMNS:
        v = config.get(name)
        if v is None or (only is not None and name not in only):
            continue
        if name == "kernel" and op is not None and op.startswith(str(v)):
            continue
        parts.append(_config_part(name, v))
    return " ".join(p for p in parts if p)


def setting_label(config: dict, names: list[str]) -> str:
    """'scaling=0.99 tol=none': the ``names`` fields of a config, a null written as none."""
    return " ".join(f"{name}=none" if config.get(name) is None else _config_part(name, config[name])
                    for name in names) or "-"


def _config_part(name: str, v) -> str:
    if name in ("kernel", "loss", "dtype", "device"):
        return str(v)
    if name == "data":
        return f"data={v}"
    if name == "M_rel":
        return "" if v == "M=N" else f"M={fmt_n(v)}"
    if name in ("D", "p", "iters"):
        return f"{name}={int(v)}"
    return f"{name}={float(v):g}"


def iterations_text(iterations, converged) -> str | None:
    """'7', '385-392', or '1000, not converged' (a solve that a cap, not its tolerance,
    stopped) from the Sinkhorn rows' ``iterations`` and ``converged`` values; None when no
    row says how many iterations it ran."""
    counts = [int(v) for v in iterations if not missing(v)]
    if not counts:
        return None
    lo, hi = min(counts), max(counts)
    label = str(lo) if lo == hi else f"{lo}-{hi}"
    stopped_by_cap = any(not missing(v) and not bool(v) for v in converged)
    return label + (", not converged" if stopped_by_cap else "")


def point_label(row) -> str:
    """One line naming a sweep point: op backend config N (seed if not 0) (sweep kind)."""
    config = row_config(row)
    seed, kind = value(row.get("seed")), value(row.get("sweep"))
    label = f"{row['op']} {row['backend']} {config_label(config, op=row['op'])} N={fmt_n(row['N'])}"
    label += f" seed={int(seed)}" if seed not in (None, 0) else ""
    return label + (f" ({kind})" if kind else "")


__all__ = ["CONFIG_COLUMNS", "BACKEND_ORDER", "backend_label", "missing", "value", "number", "text", "fmt_n",
           "fmt_seconds", "fmt_bytes", "fmt_err", "fmt_ratio", "fmt_number", "backend_sort_key", "row_config",
           "config_label", "setting_label", "iterations_text", "point_label"]
