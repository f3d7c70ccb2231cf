"""The inputs of one sweep point: generated once in float64 from the point's data source
(:mod:`kpbench.datasets.sources`; by default x: uniform cube, y: Gaussian blobs, seeded;
a source's weights a, b serve the Sinkhorn ops, uniform otherwise), moved and magnified
for conditioning points (:func:`conditioned`), and cast to the point's dtype/device
(:func:`cast`), so the float64 reference sees the same numbers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


# -- inputs ----------------------------------------------------------------------
@dataclass
class Data:
    """float64 inputs of one point: clouds x (N, D), y (M, D), signals b, h (M,), c (N,)."""

    x: np.ndarray
    y: np.ndarray
    b: np.ndarray
    h: np.ndarray
    c: np.ndarray
    # kpbench.datasets.sources.Clouds: the source's weights (hashed with the arrays where
    # given) and where x, y came from; not a field: the fields are the generated arrays
    clouds: ClassVar[object] = None

    def weights(self, N: int, M: int) -> tuple[np.ndarray, np.ndarray]:
        """The Sinkhorn weights (a, b): the source's, else uniform."""
        a = getattr(self.clouds, "a", None)
        b = getattr(self.clouds, "b", None)
        return (np.full(N, 1.0 / N) if a is None else a, np.full(M, 1.0 / M) if b is None else b)


def make_data(point) -> Data:
    from kpbench.datasets.sources import make_clouds

    clouds = make_clouds(getattr(point, "data", None), point.N, point.M, point.D, point.seed)
    rng = np.random.default_rng([point.seed, 7])
    data = Data(
        x=clouds.x, y=clouds.y,
        b=rng.uniform(0.5, 1.5, point.M),
        h=np.log(1.0 / point.M) + 0.1 * rng.standard_normal(point.M),
        c=rng.standard_normal(point.N),
    )
    data.clouds = clouds
    return conditioned(point, data)


# -- conditioning (accuracy sweeps: offset, scale) ------------------------------------
# The same problem moved and magnified: x, y -> scale * x + offset * (1, ..., 1), blur and
# reach (distances, as in GeomLoss: rho = reach**p) times scale. Exact relations to the
# unmoved problem: an offset changes nothing; a scale s leaves kernel products unchanged,
# divides their x-gradient by s, multiplies softmin outputs and S_eps by s**p and their
# x-gradient by s**(p-1) (likewise the losses of flow_step: Sinkhorn and hausdorff s**p, gaussian
# MMD unchanged, energy s; its Euler step has a fixed learning rate, so the moved x is not equivalent).
def moved(point) -> bool:
    return point.offset is not None or point.scale is not None


def conditioned(point, data: Data) -> Data:
    """``data`` moved by the point's offset and scale, then every input rounded to the point's
    dtype (kept in float64): the float64 truth sees exactly the numbers the backend gets, so
    ``rel_err`` judges the arithmetic, not the rounding of the coordinates (at offset 500 a
    float32 coordinate is off by up to 3e-5). Unmoved points keep their inputs as they were."""
    if not moved(point):
        return data
    scale = 1.0 if point.scale is None else point.scale
    offset = 0.0 if point.offset is None else point.offset

    def rounded(v: np.ndarray) -> np.ndarray:
        return v.astype(point.dtype).astype(np.float64)

    moved_data = Data(x=rounded(scale * data.x + offset), y=rounded(scale * data.y + offset),
                      b=rounded(data.b), h=rounded(data.h), c=rounded(data.c))
    clouds = data.clouds
    if clouds is not None:   # the source's weights rounded like every other input
        clouds = dataclasses.replace(clouds, **{w: rounded(getattr(clouds, w)) for w in ("a", "b")
                                                if getattr(clouds, w) is not None})
    moved_data.clouds = clouds
    return moved_data


def cast(array: np.ndarray, backend, dtype: str, device: str):
    """``array`` as the backend takes it: numpy for numpy, else a torch tensor on ``device``."""
    if backend.array_module == "numpy":
        return array.astype(dtype)
    import torch

    return torch.as_tensor(array).to(device=device, dtype=getattr(torch, dtype))
