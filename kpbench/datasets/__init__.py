"""Point-cloud generators for the sweeps and the reproductions.

Every generator returns NumPy float64 arrays (callers cast to their backend's dtype) and is
deterministic given its ``seed``. This package imports no backend and no torch: the
polynomial Gaussian-mixture model below is written with plain arithmetic only, so the same
formula serves NumPy (ground truth, sampling) and torch (differentiable fitting).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES_DIR = Path(__file__).resolve().parent / "images"
# The shipped density images (see scripts/make_density_images.py).
DENSITY_IMAGES = ("crescent", "blob_pair")


class DatasetError(ValueError):
    """Bad arguments to a generator."""


def _check_count(n, name: str = "N") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DatasetError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def uniform_cube(N: int, D: int, seed: int, dtype=np.float64) -> np.ndarray:
    """N points uniform in the unit cube [0, 1]^D."""
    N, D = _check_count(N), _check_count(D, "D")
    return np.random.default_rng(seed).random((N, D)).astype(dtype)


def gaussian_blobs(N: int, D: int, seed: int, k: int = 3, std: float = 0.05,
                   dtype=np.float64) -> np.ndarray:
    """N points from k isotropic Gaussian blobs (std ``std``) centred uniformly in [0, 1]^D."""
    N, D, k = _check_count(N), _check_count(D, "D"), _check_count(k, "k")
    if not std > 0:
        raise DatasetError(f"std must be > 0, got {std!r}")
    rng = np.random.default_rng(seed)
    centers = rng.random((k, D))
    labels = rng.integers(0, k, size=N)
    return (centers[labels] + std * rng.standard_normal((N, D))).astype(dtype)


def interval_1d(N: int, lo: float, hi: float) -> np.ndarray:
    """N points evenly spread on [lo, hi] (t = linspace(0, 1, N)), shape (N, 1)."""
    N = _check_count(N)
    if not hi >= lo:
        raise DatasetError(f"need lo <= hi, got lo={lo!r}, hi={hi!r}")
    t = np.linspace(0.0, 1.0, N)
    return (lo + (hi - lo) * t)[:, None]


# --------------------------------------------------------------------------- images
def image_path(name: str) -> Path:
    """Path of a shipped density image, by name (one of DENSITY_IMAGES)."""
    if name not in DENSITY_IMAGES:
        raise DatasetError(f"unknown density image {name!r}; choose one of {', '.join(DENSITY_IMAGES)}")
    return IMAGES_DIR / f"{name}.png"


def load_density(path_or_array) -> np.ndarray:
    """A grayscale image as a density (H, W): darkness 1 - value/255, normalised to sum 1."""
    if isinstance(path_or_array, (str, Path)):
        from PIL import Image

        path = Path(path_or_array)
        if not path.exists() and str(path_or_array) in DENSITY_IMAGES:
            path = image_path(str(path_or_array))
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        darkness = 1.0 - pixels
    else:
        darkness = np.asarray(path_or_array, dtype=np.float64)  # an array is a density already
    if darkness.ndim != 2:
        raise DatasetError(f"a density image must be 2D (H, W), got shape {darkness.shape}")
    if not np.isfinite(darkness).all() or (darkness < 0).any():
        raise DatasetError("a density image must be finite and >= 0")
    total = darkness.sum()
    if total <= 0:
        raise DatasetError("the density image is blank (no dark pixel)")
    return darkness / total


def sample_from_image(path_or_array, N: int, seed: int) -> np.ndarray:
    """N points in the unit square, pixel chosen with probability ∝ darkness, jittered
    uniformly inside the pixel. Row 0 of the image is the top (y close to 1).

    ``path_or_array``: a PNG path, a shipped image name, or an (H, W) array of
    non-negative densities.
    """
    N = _check_count(N)
    density = load_density(path_or_array)
    H, W = density.shape
    rng = np.random.default_rng(seed)
    flat = rng.choice(H * W, size=N, p=density.ravel())
    rows, cols = np.divmod(flat, W)
    jitter = rng.random((N, 2))
    x = (cols + jitter[:, 0]) / W
    y = (H - 1 - rows + jitter[:, 1]) / H
    return np.stack([x, y], axis=1)


# ------------------------------------------------------ polynomial Gaussian mixture
@dataclass(frozen=True)
class PolyGMMParams:
    """Class -1 with probability P = sigmoid(p), class +1 otherwise; latent
    t ~ N(-1, sigma[0]) or N(+1, sigma[1]); point = [x(t), y(t)] with polynomial
    coefficients listed constant term first."""

    p: float
    sigma: tuple[float, float]
    coef_x: tuple[float, ...]
    coef_y: tuple[float, ...]


# The ground truth of the classic model-fitting notebook (degree 3).
POLY_GMM_TRUTH = PolyGMMParams(
    p=1.0, sigma=(0.2, 0.4), coef_x=(-0.2, 1.0, 0.2, -0.3), coef_y=(-1.0, -0.5, 0.9, 0.2)
)


def sigmoid(p: float) -> float:
    return float(1.0 / (1.0 + np.exp(-p)))


def poly_eval(coefs, t):
    """sum_k coefs[k] t^k by Horner's rule (plain arithmetic: NumPy or torch)."""
    out = coefs[len(coefs) - 1] + 0 * t
    for k in range(len(coefs) - 2, -1, -1):
        out = out * t + coefs[k]
    return out


def polygmm_latent(N: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed draws of the reparameterised model: signs s (first N//2 are -1, the rest
    +1) and standard normal z, both shape (N,)."""
    N = _check_count(N)
    if N < 2:
        raise DatasetError("the polynomial GMM model needs N >= 2 (one point per class)")
    cut = N // 2
    s = np.where(np.arange(N) < cut, -1.0, 1.0)
    z = np.random.default_rng(seed).standard_normal(N)
    return s, z


def polygmm_model(P, sigma_minus, sigma_plus, coef_x, coef_y, s, z):
    """The reparameterised model: weights a (N,) and coordinates (x(t), y(t)), each (N,).

    t = s + sigma_s z, class -1 weighted P / cut and class +1 weighted (1 - P) / (N - cut).
    Plain arithmetic only, so that with torch inputs the result is differentiable in
    P, the sigmas and the coefficients. ``s``, ``z`` come from polygmm_latent (cast to the
    caller's array type)."""
    N = s.shape[0]
    cut = N // 2
    minus = (1 - s) / 2           # 1 on class -1, 0 on class +1
    plus = (1 + s) / 2
    t = s + (sigma_minus * minus + sigma_plus * plus) * z
    a = (P / cut) * minus + ((1 - P) / (N - cut)) * plus
    return a, poly_eval(coef_x, t), poly_eval(coef_y, t)


def polygmm_weighted(params: PolyGMMParams, N: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The model as a weighted cloud (a, X): N/2 points per class (reparameterised draws)."""
    s, z = polygmm_latent(N, seed)
    a, px, py = polygmm_model(sigmoid(params.p), params.sigma[0], params.sigma[1],
                              np.asarray(params.coef_x), np.asarray(params.coef_y), s, z)
    return a, np.stack([px, py], axis=1)


def polygmm_sample(params: PolyGMMParams, N: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """N i.i.d. samples of the model (class drawn with P = sigmoid(p)) plus Gaussian noise
    of std ``noise``; uniform weights. The target of the model-fitting reproduction."""
    N = _check_count(N)
    rng = np.random.default_rng(seed)
    s = np.where(rng.random(N) < sigmoid(params.p), -1.0, 1.0)
    sigma = np.where(s < 0, params.sigma[0], params.sigma[1])
    t = s + sigma * rng.standard_normal(N)
    points = np.stack([poly_eval(np.asarray(params.coef_x), t),
                       poly_eval(np.asarray(params.coef_y), t)], axis=1)
    return points + noise * rng.standard_normal((N, 2))


__all__ = [
    "DENSITY_IMAGES", "DatasetError", "IMAGES_DIR", "POLY_GMM_TRUTH", "PolyGMMParams",
    "gaussian_blobs", "image_path", "interval_1d", "load_density", "poly_eval",
    "polygmm_latent", "polygmm_model", "polygmm_sample", "polygmm_weighted",
    "sample_from_image", "sigmoid", "uniform_cube",
]
