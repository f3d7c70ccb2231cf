"""Gradient flows in 1D: registering the interval [0, .2] onto [.6, 1] (the GeomLoss classic).

Source x_i = 0.2 t_i, target y_j = 0.4 t_j + 0.6 (t evenly spread on [0, 1]); Euler scheme
x <- x - lr N grad_x Loss with lr = .01 for t in [0, 5]; snapshots at t = 0, .25, .5, 1, 2, 5.
Rows go to the table ``flow_1d`` (W2 to the target is exact in 1D), figures to
``figures/gradient_flow_1d/<loss>.png``.
"""
from __future__ import annotations

import numpy as np

from kpbench import datasets
from kpbench.datasets import sources
from kpbench.results.store import ResultStore
from kpbench.reproductions.common import (make_setup, print_table, pyplot,
                                          save_snapshot_figure, select_specs)
from kpbench.reproductions.flows import SUMMARY_COLUMNS, LossSpec, run_suite
from kpbench.reproductions.metrics import energy_to_target, w2_1d

TABLE = "flow_1d"
FIGURES = "gradient_flow_1d"
LR = 0.01
DEFAULT_N = 50
SOURCE, TARGET = sources.FLOW_1D_INTERVALS   # also the data axis's intervals_1d
PLOT_RANGE = (-0.5, 1.5)

# Sinkhorn on GeomLoss's eps schedule (its first eps twice): the flows of its examples,
# so that trajectories can be compared with GeomLoss's step by step.
LOSSES = (
    LossSpec.of("gaussian_blur0.5", "mmd", kernel="gaussian", blur=0.5),
    LossSpec.of("gaussian_blur0.1", "mmd", kernel="gaussian", blur=0.1),
    LossSpec.of("laplacian_blur0.1", "mmd", kernel="laplacian", blur=0.1),
    LossSpec.of("energy", "energy"),
    LossSpec.of("sinkhorn_p1_blur1.0", "sinkhorn", p=1, blur=1.0, schedule="geomloss"),
    LossSpec.of("sinkhorn_p1_blur0.01", "sinkhorn", p=1, blur=0.01, schedule="geomloss"),
    LossSpec.of("sinkhorn_p2_blur1.0", "sinkhorn", p=2, blur=1.0, schedule="geomloss"),
    LossSpec.of("sinkhorn_p2_blur0.01", "sinkhorn", p=2, blur=0.01, schedule="geomloss"),
    LossSpec.of("unbalanced_p2_blur0.01_reach0.3", "sinkhorn", p=2, blur=0.01, reach=0.3, schedule="geomloss"),
)
DISTANCES = {"w2": w2_1d, "energy": energy_to_target}


def inputs(N: int, M: int) -> tuple[np.ndarray, np.ndarray]:
    return datasets.interval_1d(N, *SOURCE), datasets.interval_1d(M, *TARGET)


def run(backend: str = "torch", N: int | None = None, M: int | None = None,
        dtype: str = "float64", device: str = "auto", seed: int = 0, out="results",
        losses=None, t_max: float = 5.0, figures: bool = True) -> list[dict]:
    """Run the flows of ``losses`` (labels; None = all nine). Returns one summary per loss."""
    setup = make_setup(backend, dtype, device, seed)
    N = N or DEFAULT_N
    x0, y = inputs(N, M or N)
    return run_suite(select_specs(LOSSES, losses), x0, y, setup, store=ResultStore(out), table=TABLE,
                     lr=LR, t_max=t_max, distances=DISTANCES, figures_name=FIGURES,
                     draw=draw if figures else None)


def kde(points: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian kernel density estimate of 1D points on ``grid``."""
    diff = (grid[:, None] - np.ravel(points)[None, :]) / bandwidth
    return np.exp(-0.5 * diff**2).mean(1) / (bandwidth * np.sqrt(2 * np.pi))


def draw(trace, y_np: np.ndarray, path) -> None:
    """A 2x3 panel of densities at the snapshots: source red, target blue."""
    plt = pyplot()
    grid = np.linspace(*PLOT_RANGE, 1000)
    bandwidth = max(0.005, 1.0 / len(y_np))
    target = kde(y_np, grid, bandwidth)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, snap in zip(axes.ravel(), trace.snapshots):
        ax.fill_between(grid, target, color="tab:blue", alpha=0.5, lw=0)
        if not snap.nan:
            ax.fill_between(grid, kde(snap.x, grid, bandwidth), color="tab:red", alpha=0.5, lw=0)
        ax.set_title(f"t = {snap.t:g}" + (" (NaN)" if snap.nan else ""))
        ax.set_xlim(*PLOT_RANGE)
        ax.set_yticks([])
    save_snapshot_figure(fig, axes, len(trace.snapshots), f"1D gradient flow: {trace.spec.label}", path)


def report(summaries: list[dict]) -> None:
    print_table(summaries, SUMMARY_COLUMNS)
