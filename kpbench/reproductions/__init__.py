"""Reproductions of the field's classic experiments, on any autograd backend.

* ``gradient-flow-1d``: registration of an interval onto another (kpbench.reproductions.gradient_flow_1d)
* ``gradient-flow-2d``: flows between two densities of the unit square (gradient_flow_2d)
* ``model-fitting``: a polynomial Gaussian-mixture model fitted by minimum divergence (model_fitting)

Each module exposes ``run(...) -> list[dict]`` (one summary per loss/fidelity); rows go to
the result store, figures to ``store.figures_dir(...)``. This package's ``__init__`` stays
light (no torch import) so that ``kpbench --help`` stays fast.
"""
from __future__ import annotations

# CLI name -> module
REPRODUCTIONS = {
    "gradient-flow-1d": "kpbench.reproductions.gradient_flow_1d",
    "gradient-flow-2d": "kpbench.reproductions.gradient_flow_2d",
    "model-fitting": "kpbench.reproductions.model_fitting",
}
