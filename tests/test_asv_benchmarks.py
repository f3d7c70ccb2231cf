"""The asv configuration and benchmark suite: it loads, asv accepts it, skips are skips,
and the benchmarks compute what they claim (numpy/torch only: no KeOps compilation here)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from kpbench.sinkhorn import epsilon_schedule

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import _common, bench_primitives, bench_sinkhorn
        yield _common, bench_primitives, bench_sinkhorn
    finally:
        sys.path.remove(str(ROOT))


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def test_config_points_asv_at_the_benchmarks_and_git_ignored_dirs():
    from asv.config import Config

    conf = Config.load(str(ROOT / "asv.conf.json"))
    assert conf.benchmark_dir == "benchmarks"
    assert (conf.results_dir, conf.html_dir, conf.env_dir) == (".asv/results", ".asv/html", ".asv/env")
    assert conf.environment_type == "existing"
    assert "/.asv/" in (ROOT / ".gitignore").read_text().split()


def test_virtualenv_config_builds_and_installs_the_package():
    conf = json.loads((ROOT / "asv.virtualenv.conf.json").read_text())
    assert conf["environment_type"] == "virtualenv"
    assert conf["benchmark_dir"] == "benchmarks"
    installs = " ".join(conf["install_command"])
    assert "torch==2.13.0" in installs and "{wheel_file}" in installs


def test_asv_check_accepts_the_suite(tmp_path):
    pytest.importorskip("asv")
    # HOME apart: asv must not need (or write) the user's machine file for a check
    proc = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in proc.stdout


def test_asv_quick_run_of_one_benchmark_passes(tmp_path):
    """The CI smoke check: asv itself runs a benchmark end to end (a broken one fails here)."""
    pytest.importorskip("asv")
    env = {**os.environ, "HOME": str(tmp_path)}

    def asv(*args):
        return subprocess.run([sys.executable, "-m", "asv", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env=env)

    assert asv("machine", "--yes", "--machine", "ci").returncode == 0
    proc = asv("run", "--quick", "--python=same", "--machine", "ci", "--show-stderr",
               "--bench", r"KernelProduct.time_kernel_product\('(numpy|torch)', 'cpu', 200\)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failed" not in proc.stdout.lower()
    assert "time_kernel_product" in proc.stdout


def test_every_benchmark_kind_is_there(bench):
    _, primitives, sinkhorn = bench
    names = {name for module in (primitives, sinkhorn) for cls in vars(module).values()
             if isinstance(cls, type) for name in vars(cls)}
    assert {"time_kernel_product", "time_softmin", "time_sinkhorn", "time_sinkhorn_grad",
            "track_kernel_product_peak_mem", "track_sinkhorn_peak_mem", "track_kernel_product_rel_err",
            "track_sinkhorn_rel_err", "track_sinkhorn_iterations"} <= names
    assert not any(name.startswith("peakmem_") for name in names)   # whole-process RSS: gone
    for cls in (primitives.KernelProduct, sinkhorn.Sinkhorn, sinkhorn.SinkhornAccuracy,
                primitives.KernelProductMemory, sinkhorn.SinkhornMemory):
        assert len(cls.params) == len(cls.param_names) == 3
        assert cls.params[0] == ["numpy", "torch", "keops", "cuda"]


@pytest.mark.parametrize("cls_name, backend, device, why", [
    ("KernelProduct", "cuda", "cpu", "cuda backend runs on a CUDA device only"),
    ("KernelProductAccuracy", "numpy", "cpu", "numpy is the float64 reference"),
    ("SinkhornGrad", "numpy", "cpu", "no autograd"),
])
def test_impossible_combinations_are_skipped_in_setup(bench, cls_name, backend, device, why):
    _, primitives, sinkhorn = bench
    cls = getattr(primitives, cls_name, None) or getattr(sinkhorn, cls_name)
    with pytest.raises(NotImplementedError, match=why):
        cls().setup(backend, device, 200)


@pytest.mark.skipif("_cuda_visible()", reason="a CUDA device is visible here")
def test_cuda_device_is_skipped_without_a_gpu(bench):
    _, primitives, _ = bench
    with pytest.raises(NotImplementedError, match="CUDA"):
        primitives.KernelProduct().setup("torch", "cuda", 200)


def test_kernel_product_benchmark_and_its_accuracy_track(bench):
    _, primitives, _ = bench
    timed = primitives.KernelProduct()
    timed.setup("torch", "cpu", 200)
    out = timed.run()
    assert tuple(out.shape) == (200,)
    track = primitives.KernelProductAccuracy()
    track.setup("torch", "cpu", 200)
    err = track.track_kernel_product_rel_err("torch", "cpu", 200)
    assert 0 < err < 1e-5   # float32 vs the float64 reference: round-off, not zero


def test_peak_memory_tracks_measure_the_call_itself(bench):
    _, primitives, _ = bench
    track = primitives.KernelProductMemory()
    peaks = {}
    for n in (1000, 4000):
        track.setup("torch", "cpu", n)
        peaks[n] = track.track_kernel_product_peak_mem("torch", "cpu", n)
    # dense torch holds N x M float32 matrices: at least one, far below the process's RSS
    assert 1000 * 1000 * 4 <= peaks[1000] < 100e6
    assert 4000 * 4000 * 4 <= peaks[4000] < 1e9
    assert peaks[4000] > 8 * peaks[1000]   # grows like N*M (16x), not flat like peakmem_


def test_sinkhorn_iterations_track_follows_the_eps_schedule(bench):
    common, _, sinkhorn = bench
    track = sinkhorn.SinkhornAccuracy()
    track.setup("torch", "cpu", 200)
    iterations = track.track_sinkhorn_iterations("torch", "cpu", 200)
    x, y = track.data.x, track.data.y
    points = list(x) + list(y)
    import numpy as np

    diameter = float(np.linalg.norm(np.max(points, 0) - np.min(points, 0)))
    params = common.SINKHORN
    assert iterations == len(epsilon_schedule(diameter, params["blur"], params["p"], params["scaling"]))
    # against the converged float64 truth: what eps-scaling at this setting leaves undone
    assert 1e-4 < track.track_sinkhorn_rel_err("torch", "cpu", 200) < 0.1
