"""Shared fixtures. ``ray_cluster``: ONE local Ray cluster (2 CPUs) for the whole session,
started only by the tests that ask for it (starting Ray costs several seconds).

Under pytest-xdist (the CI command runs ``-n 2 --dist loadgroup``): both workers share
one KeOps build folder (the keops backend locks each formula while pykeops builds it, so
a formula is compiled once, by whichever worker needs it first), and every test that
starts Ray or a local cluster goes to one worker, one after the other (group ``ray``), so
that two clusters never share the machine's two CPUs.
"""
from __future__ import annotations

import os
import pathlib

import pytest

PLUGINS = pathlib.Path(__file__).resolve().parent / "plugins"
TEST_OPS_PLUGIN = str(PLUGINS / "test_ops.py")   # the crashing/sleeping sweep ops
SLOWDOWN_PLUGIN = str(PLUGINS / "slowdown.py")   # KPBENCH_SLOWDOWN="torch=1.3"
# modules whose tests start Ray clusters (of their own, or through subprocesses)
RAY_MODULES = {"test_cluster_multinode", "test_cluster_smoke", "test_sweep_executors",
               "test_asv_history", "test_loopback_cluster"}

def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_cluster" in item.fixturenames or item.module.__name__ in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="module")
def test_ops():
    """Register the test-only sweep ops here and in every worker started from now on."""
    from kpbench import plugins

    plugins.use(TEST_OPS_PLUGIN)


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")

    from kpbench.bench.executors.cluster import start_local_ray, thread_env_vars, worker_runtime_env
    from kpbench.bench.settings import DEFAULT_THREADS

    if not ray.is_initialized():
        # kpbench's own local cluster (loopback only); its workers inherit one OpenMP/BLAS
        # thread, as those of the clusters kpbench starts do
        os.environ.update(thread_env_vars(DEFAULT_THREADS))
        start_local_ray(ray, num_cpus=2, runtime_env=worker_runtime_env())
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch single-threaded for a module: the two cores here are shared, and oversubscribed
    OpenMP threads make the small dense ops of the reproductions 10-100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
