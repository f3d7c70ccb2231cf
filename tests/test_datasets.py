"""kpbench.datasets: shapes, determinism, the image sampler's geometry, the GMM model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpbench import datasets
from kpbench.datasets import DatasetError

ROOT = Path(__file__).resolve().parents[1]


def test_uniform_cube_shape_range_and_seed():
    x = datasets.uniform_cube(500, 3, seed=1)
    assert x.shape == (500, 3) and x.dtype == np.float64
    assert x.min() >= 0 and x.max() <= 1
    assert np.array_equal(x, datasets.uniform_cube(500, 3, seed=1))
    assert not np.array_equal(x, datasets.uniform_cube(500, 3, seed=2))
    assert datasets.uniform_cube(4, 2, seed=0, dtype=np.float32).dtype == np.float32


def test_gaussian_blobs_cluster_around_k_centers():
    x = datasets.gaussian_blobs(3000, 2, seed=0, k=2, std=0.01)
    assert x.shape == (3000, 2) and x.dtype == np.float64
    assert np.array_equal(x, datasets.gaussian_blobs(3000, 2, seed=0, k=2, std=0.01))
    # with a tiny std, every point is within 6 std of one of two centres: two clusters
    from scipy.cluster.vq import kmeans2

    centers, labels = kmeans2(x, 2, seed=0, minit="++")
    assert np.max(np.linalg.norm(x - centers[labels], axis=1)) < 0.06


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_counts_are_checked(bad):
    with pytest.raises(DatasetError):
        datasets.uniform_cube(bad, 2, seed=0)


def test_interval_1d_is_deterministic_and_even():
    x = datasets.interval_1d(5, 0.6, 1.0)
    assert x.shape == (5, 1)
    np.testing.assert_allclose(x.ravel(), [0.6, 0.7, 0.8, 0.9, 1.0])
    with pytest.raises(DatasetError, match="lo <= hi"):
        datasets.interval_1d(5, 1.0, 0.0)


def test_image_sampler_puts_points_in_the_dark_pixel_with_row_zero_on_top():
    density = np.zeros((4, 8))
    density[0, 6] = 1.0                      # top row, 7th column
    x = datasets.sample_from_image(density, 300, seed=0)
    assert x.shape == (300, 2)
    assert np.all((x[:, 0] >= 6 / 8) & (x[:, 0] <= 7 / 8))
    assert np.all((x[:, 1] >= 3 / 4) & (x[:, 1] <= 1.0))
    assert x[:, 0].std() > 0.02 and x[:, 1].std() > 0.05   # jittered inside the pixel


def test_image_sampler_follows_darkness_from_a_png(tmp_path):
    from PIL import Image

    pixels = np.full((2, 2), 255, dtype=np.uint8)
    pixels[1, 0] = 0        # black: darkness 1, bottom-left
    pixels[1, 1] = 191      # darkness 0.25, bottom-right
    path = tmp_path / "two.png"
    Image.fromarray(pixels).save(path)
    x = datasets.sample_from_image(path, 8000, seed=3)
    assert np.all(x[:, 1] <= 0.5)
    left = np.mean(x[:, 0] < 0.5)
    assert left == pytest.approx(1 / 1.25, abs=0.02)
    assert np.array_equal(x, datasets.sample_from_image(str(path), 8000, seed=3))


def test_image_sampler_refuses_blank_images():
    with pytest.raises(DatasetError, match="blank"):
        datasets.sample_from_image(np.zeros((3, 3)), 10, seed=0)
    with pytest.raises(DatasetError, match="unknown density image"):
        datasets.image_path("nope")


def test_shipped_images_are_regenerated_identically(tmp_path):
    from PIL import Image

    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_density_images.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in datasets.DENSITY_IMAGES:
        shipped = np.asarray(Image.open(datasets.image_path(name)))
        fresh = np.asarray(Image.open(tmp_path / f"{name}.png"))
        assert shipped.shape == (64, 64)
        assert np.array_equal(shipped, fresh), name


def test_shipped_images_are_apart_source_left_target_right():
    source = datasets.sample_from_image("crescent", 2000, seed=0)
    target = datasets.sample_from_image("blob_pair", 2000, seed=1)
    for pts in (source, target):
        assert pts.min() >= 0 and pts.max() <= 1
    assert source[:, 0].mean() < 0.4 < 0.6 < target[:, 0].mean()


def test_polygmm_weights_carry_the_class_masses():
    truth = datasets.POLY_GMM_TRUTH
    a, x = datasets.polygmm_weighted(truth, 101, seed=0)
    assert x.shape == (101, 2) and a.shape == (101,)
    P = datasets.sigmoid(truth.p)
    assert a[:50].sum() == pytest.approx(P)       # cut = N // 2 points of class -1
    assert a[50:].sum() == pytest.approx(1 - P)


def test_polygmm_samples_and_weighted_model_describe_one_distribution():
    truth = datasets.POLY_GMM_TRUTH
    samples = datasets.polygmm_sample(truth, 40000, seed=0, noise=0.0)
    a, x = datasets.polygmm_weighted(truth, 40000, seed=1)
    np.testing.assert_allclose(samples.mean(0), a @ x, atol=0.02)
    noisy = datasets.polygmm_sample(truth, 40000, seed=0, noise=0.05)
    assert np.std(noisy - samples) == pytest.approx(0.05, rel=0.05)


def test_polygmm_model_is_differentiable_with_torch():
    torch = pytest.importorskip("torch")
    s, z = (torch.as_tensor(v) for v in datasets.polygmm_latent(10, seed=0))
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    cx = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)   # x(t) = t
    a, px, py = datasets.polygmm_model(torch.sigmoid(p), 0.2, 0.4, cx, cx, s, z)
    (a * px).sum().backward()
    # d/dp of sum_i a_i t_i = sigmoid'(p) * (mean t over class -1 - mean t over class +1)
    t = s + torch.where(s < 0, 0.2, 0.4) * z
    expected = torch.sigmoid(p) * (1 - torch.sigmoid(p)) * (t[:5].mean() - t[5:].mean())
    assert float(p.grad) == pytest.approx(float(expected.detach()))
    assert cx.grad is not None and torch.isfinite(cx.grad).all()


def test_datasets_import_no_backend():
    code = ("import sys, kpbench.datasets; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('kpbench.backends')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
