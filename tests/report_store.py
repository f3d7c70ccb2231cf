"""A small real store for the report tests: tiny sweeps of every kind, inline, no KeOps
(its first compilation would dominate), one dense refusal from a small memory budget."""
from __future__ import annotations

import pathlib

from kpbench.bench.plan import SweepSpec
from kpbench.bench.settings import Settings, split_measure
from kpbench.bench.sweep import run_sweep

COMMON = dict(backends=["numpy", "torch"], timeout_s=120)
SPECS = (
    dict(kind="speed", ops=["kernel_product"], N=[100, 300, 1000], blur=[0.05, 0.2],
         dtype=["float32", "float64"], repeats=5),
    dict(kind="speed", ops=["sinkhorn"], N=[100, 200], blur=[0.1], iters=[5, None],
         scaling=[0.5, 0.9], repeats=3),
    dict(kind="accuracy", ops=["kernel_product"], N=[100, 300, 1000], blur=[0.05, 0.2],
         dtype=["float32", "float64"]),
    dict(kind="accuracy", ops=["sinkhorn"], N=[100, 200], blur=[0.1], iters=[5, None],
         scaling=[0.5, 0.9], dtype=["float32", "float64"]),
    dict(kind="memory", ops=["kernel_product"], N=[100, 1000, 3000], memory_budget=20_000_000),
)


def make_store(out: pathlib.Path) -> pathlib.Path:
    for values in SPECS:
        sweep_values({**COMMON, **values}, out)
    return out


PEERS = ["torch", "geomloss-tensorized", "pot", "ott", "ott-online", "flash-sinkhorn",
         "flash-sinkhorn-no-tf32"]
PEER_SPECS = (   # FlashSinkhorn without a GPU: its speed rows are `unsupported` (interpreted)
    dict(kind="speed", ops=["sinkhorn"], N=[60], blur=[0.1], iters=[None], repeats=2, warmup=0),
    dict(kind="accuracy", ops=["sinkhorn"], N=[60], blur=[0.1], iters=[None]),
)


def make_peers_store(out: pathlib.Path) -> pathlib.Path:
    """Every peer beside torch at one small point (no KeOps: its compilation would dominate)."""
    for values in PEER_SPECS:
        sweep_values({**COMMON, "backends": PEERS, **values}, out)
    return out


def sweep_values(values: dict, out: pathlib.Path) -> None:
    axes, measured = split_measure(values)
    run_sweep(SweepSpec(**axes), Settings(executor="inline", out=str(out), progress=False, **measured))
