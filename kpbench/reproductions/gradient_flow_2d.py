"""Gradient flows in 2D between two densities of the unit square (shipped grayscale images).

Source: ``crescent.png``, target: ``blob_pair.png`` (see scripts/make_density_images.py),
N and M points sampled with the seed. Flow x' = -(1/a_i) grad_x Cost, Euler steps of
lr = .05 for t in [0, 5], snapshots at t = 0, .25, .5, 1, 2, 5 with the velocity field
drawn as arrows. Rows go to the table ``flow_2d`` (W2 by optimal assignment when N = M,
energy distance always), figures to ``figures/gradient_flow_2d/<cost>.png``.
"""
from __future__ import annotations

import numpy as np

from kpbench import datasets
from kpbench.datasets import sources
from kpbench.results.store import ResultStore
from kpbench.reproductions.common import (make_setup, print_table, pyplot,
                                          save_snapshot_figure, select_specs)
from kpbench.reproductions.flows import SUMMARY_COLUMNS, LossSpec, run_suite
from kpbench.reproductions.metrics import energy_to_target, w2_matching

TABLE = "flow_2d"
FIGURES = "gradient_flow_2d"
LR = 0.05
DEFAULT_N = 300
SOURCE_IMAGE, TARGET_IMAGE = sources.FLOW_2D_IMAGES   # also the data axis's image_2d
MAX_ARROWS = 200

# Sinkhorn on GeomLoss's eps schedule (its first eps twice): the flows of its examples,
# so that trajectories can be compared with GeomLoss's step by step.
LOSSES = (
    LossSpec.of("labeled_l2", "labeled_l2"),
    LossSpec.of("gaussian_blur0.1", "mmd", kernel="gaussian", blur=0.1),
    LossSpec.of("gaussian_blur0.5", "mmd", kernel="gaussian", blur=0.5),
    LossSpec.of("laplacian_blur0.5", "mmd", kernel="laplacian", blur=0.5),
    LossSpec.of("energy", "energy"),
    LossSpec.of("hausdorff_p2_blur0.1", "hausdorff", p=2, blur=0.1),
    LossSpec.of("sinkhorn_p2_blur0.01", "sinkhorn", p=2, blur=0.01, schedule="geomloss"),
    LossSpec.of("sinkhorn_p2_blur0.1", "sinkhorn", p=2, blur=0.1, schedule="geomloss"),
    LossSpec.of("unbalanced_p2_blur0.01_reach0.1", "sinkhorn", p=2, blur=0.01, reach=0.1, schedule="geomloss"),
    LossSpec.of("unbalanced_p2_blur0.01_reach0.3", "sinkhorn", p=2, blur=0.01, reach=0.3, schedule="geomloss"),
)
DISTANCES = {"w2": w2_matching, "energy": energy_to_target}


def inputs(N: int, M: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target samples; the target uses seed + 1 so the two draws are independent."""
    return (datasets.sample_from_image(datasets.image_path(SOURCE_IMAGE), N, seed),
            datasets.sample_from_image(datasets.image_path(TARGET_IMAGE), M, seed + 1))


def run(backend: str = "torch", N: int | None = None, M: int | None = None,
        dtype: str = "float64", device: str = "auto", seed: int = 0, out="results",
        losses=None, t_max: float = 5.0, figures: bool = True) -> list[dict]:
    """Run the flows of ``losses`` (labels; None = all). labeled_l2 needs N = M and is
    skipped (status "skipped" in the summary) otherwise."""
    setup = make_setup(backend, dtype, device, seed)
    N = N or DEFAULT_N
    M = M or N
    specs = select_specs(LOSSES, losses)
    skipped = [s for s in specs if s.name == "labeled_l2" and N != M]
    x0, y = inputs(N, M, seed)
    summaries = run_suite([s for s in specs if s not in skipped], x0, y, setup,
                          store=ResultStore(out), table=TABLE, lr=LR, t_max=t_max,
                          distances=DISTANCES, figures_name=FIGURES,
                          draw=draw if figures else None,
                          extra={"source_image": SOURCE_IMAGE, "target_image": TARGET_IMAGE})
    return summaries + [{"loss": s.label, "status": "skipped", "error": "needs N = M"}
                        for s in skipped]


def draw(trace, y_np: np.ndarray, path) -> None:
    """A 2x3 panel of the clouds at the snapshots (source red, target blue) with the
    velocity -grad/a of (a subsample of) the source points as arrows."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    size = max(1.0, 2000.0 / max(len(y_np), len(trace.snapshots[0].x)))
    pick = np.random.default_rng(0).permutation(len(trace.snapshots[0].x))[:MAX_ARROWS]
    for ax, snap in zip(axes.ravel(), trace.snapshots):
        ax.scatter(y_np[:, 0], y_np[:, 1], s=size, c="tab:blue", alpha=0.5, lw=0)
        if not snap.nan:
            ax.scatter(snap.x[:, 0], snap.x[:, 1], s=size, c="tab:red", alpha=0.6, lw=0)
            ax.quiver(snap.x[pick, 0], snap.x[pick, 1], snap.velocity[pick, 0],
                      snap.velocity[pick, 1], color="k", angles="xy", scale_units="xy",
                      scale=4.0, width=0.003, alpha=0.7)
        ax.set_title(f"t = {snap.t:g}" + (" (NaN)" if snap.nan else ""))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    save_snapshot_figure(fig, axes, len(trace.snapshots), f"2D gradient flow: {trace.spec.label}  (arrows: -grad/a, 1/4 scale)", path)


def report(summaries: list[dict]) -> None:
    print_table(summaries, SUMMARY_COLUMNS)
