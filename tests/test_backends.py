"""Every backend agrees with the float64 NumPy reference on the two primitives."""
import numpy as np
import pytest
import torch

from kpbench.backends import (
    BackendUnavailable,
    KPBenchError,
    MemoryBudgetExceeded,
    availability,
    get_backend,
)

BACKENDS = ["torch", "keops"]
SHAPES = [(1, 1, 1), (57, 33, 1), (200, 150, 3), (40, 70, 7)]
KERNELS = ["gaussian", "laplacian", "energy"]
DTYPES = [torch.float64, torch.float32]


def rel_err(out, ref) -> float:
    out = out.detach().cpu().double().numpy()
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def tolerance(backend, dtype) -> float:
    """What the arithmetic allows on these unit-cube clouds, 2.5-10x above the worst error
    measured. float64: 1e-12 (dense torch <= 3e-14, KeOps <= 3e-16). float32: KeOps 2e-6
    (it takes differences, <= 3e-7); dense torch 4e-6: its |x|^2 + |y|^2 - 2<x, y> on
    centred clouds is <= 1.03e-6 off (softmin, p = 2, eps 1e-3), its distances from
    differences (laplacian, energy, p = 1) <= 2.6e-7. (The expansion at the raw coordinates
    and the square root of it were 4.4e-6 and 2.7e-5 off.)"""
    if dtype == torch.float64:
        return 1e-12
    return 2e-6 if backend == "keops" else 4e-6


def clouds(N, M, D, seed=0, columns=None):
    rng = np.random.default_rng(seed)
    b_shape = (M,) if columns is None else (M, columns)
    return rng.random((N, D)), rng.random((M, D)), rng.random(b_shape) + 0.1


def kernel_product_cases():
    """Every kernel, dtype and shape on torch; on KeOps, whose every (kernel, dtype, D, and
    N or M = 1) is a routine compiled for ~12 s, every kernel and dtype at one shape and
    the boundary shapes (a single point, D = 1, D = 7) with the gaussian kernel."""
    full = [(k, d, s) for s in SHAPES for k in KERNELS for d in DTYPES]
    cases = [("torch", *case) for case in full] + [
        ("keops", k, d, s) for k, d, s in full if s == SHAPES[2] or (k == "gaussian" and d == torch.float64)]
    for backend, k, d, s in cases:
        yield pytest.param(backend, k, d, s, id=f"{backend}-{k}-{str(d)[6:]}-{'x'.join(map(str, s))}")


@pytest.mark.parametrize("backend, kernel, dtype, shape", kernel_product_cases())
def test_kernel_product_matches_reference(backend, dtype, kernel, shape):
    x, y, b = clouds(*shape)
    ref = get_backend("numpy").kernel_product(x, y, b, kernel=kernel, blur=0.2)
    t = [torch.tensor(v, dtype=dtype) for v in (x, y, b)]
    out = get_backend(backend).kernel_product(*t, kernel=kernel, blur=0.2)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= tolerance(backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("blur", [0.05, 0.5])
def test_kernel_product_several_columns(backend, blur):
    x, y, b = clouds(80, 60, 3, columns=3)
    ref = get_backend("numpy").kernel_product(x, y, b, kernel="gaussian", blur=blur)
    t = [torch.tensor(v) for v in (x, y, b)]
    out = get_backend(backend).kernel_product(*t, kernel="gaussian", blur=blur)
    assert out.shape == (80, 3)
    assert rel_err(out, ref) <= tolerance(backend, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_softmin_matches_reference(backend, dtype, p, eps):
    x, y, w = clouds(120, 90, 2, seed=1)
    h = np.log(w / w.sum())
    ref = get_backend("numpy").softmin(x, y, h, eps=eps, p=p)
    t = [torch.tensor(v, dtype=dtype) for v in (x, y, h)]
    out = get_backend(backend).softmin(*t, eps=eps, p=p)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= tolerance(backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmin_is_stable_where_naive_exp_overflows(backend):
    # C/eps reaches ~1e4 here: exp(-C/eps) underflows, exp(h) would overflow without the max shift.
    x, y, _ = clouds(30, 20, 2, seed=2)
    h = np.full(20, 300.0)
    ref = get_backend("numpy").softmin(x, y, h, eps=1e-4, p=2)
    out = get_backend(backend).softmin(torch.tensor(x, dtype=torch.float32),
                                       torch.tensor(y, dtype=torch.float32),
                                       torch.tensor(h, dtype=torch.float32), eps=1e-4, p=2)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= tolerance(backend, torch.float32)


def test_numpy_reference_is_chunked(monkeypatch):
    from kpbench.reference import primitives as numpy_ref

    x, y, b = clouds(300, 50, 3)
    whole = numpy_ref.np_kernel_product(x, y, b, "laplacian", 0.3)
    monkeypatch.setattr(numpy_ref, "CHUNK_BYTES", 8 * 50 * 3 * 7)  # 7 rows per chunk
    assert np.allclose(numpy_ref.np_kernel_product(x, y, b, "laplacian", 0.3), whole, rtol=1e-14)


def test_registry_rejects_unknown_backend_and_lists_known_ones():
    with pytest.raises(KPBenchError, match="unknown backend 'jax'.*numpy.*torch.*keops"):
        get_backend("jax")


def test_unavailable_backend_says_why():
    ok, why = availability()["cuda"]
    if ok:
        pytest.skip("a CUDA device is present")
    assert why
    with pytest.raises(BackendUnavailable, match="backend 'cuda' is unavailable: .+"):
        get_backend("cuda")


def test_keops_unavailable_reason_when_pykeops_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pykeops(name, *args, **kwargs):
        if name == "pykeops" or name.startswith("pykeops."):
            raise ImportError("No module named 'pykeops'")
        return real_import(name, *args, **kwargs)

    from kpbench.backends.keops import KeOpsBackend

    monkeypatch.setattr(builtins, "__import__", no_pykeops)
    assert KeOpsBackend().available() == (False, "pykeops not installed (pip install 'kpbench[keops]')")


def test_dense_torch_refuses_before_exhausting_memory():
    x = torch.rand(100_000, 3)
    with pytest.raises(MemoryBudgetExceeded, match=r"torch kernel_product at N=100000.*needs an estimated") as info:
        get_backend("torch").kernel_product(x, x, torch.ones(100_000), kernel="gaussian", blur=0.1)
    assert info.value.estimate_bytes >= 100_000**2 * 4
    assert info.value.estimate_bytes > info.value.budget_bytes


def test_a_plugin_named_in_the_environment_replaces_a_backend_under_its_name():
    import os
    import subprocess
    import sys

    from conftest import SLOWDOWN_PLUGIN

    script = ("from kpbench import plugins; plugins.load(); from kpbench.backends import get_backend; "
              "print(type(get_backend('torch')).__name__)")
    env = {**os.environ, "KPBENCH_PLUGINS": SLOWDOWN_PLUGIN, "KPBENCH_SLOWDOWN": "torch=1.3"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "SlowTorchBackend", done.stderr
    env["KPBENCH_PLUGINS"] = "no_such_plugin_module"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "plugin 'no_such_plugin_module' cannot be imported" in done.stderr



def test_importing_kpbench_loads_no_plugin():
    """Plugins load where asked (the kpbench command, the workers), never as a side effect
    of importing the backends or the ops."""
    import os
    import subprocess
    import sys

    script = ("from kpbench.backends import get_backend; import kpbench.bench.ops; "
              "print(type(get_backend('torch')).__name__)")
    env = {**os.environ, "KPBENCH_PLUGINS": "no_such_plugin_module"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "TorchBackend", done.stderr


KEOPS_FIRST_CALL = """
import time, torch, pykeops.torch
from kpbench.backends import get_backend
x, y, b = torch.rand(20, 3, dtype=torch.float64), torch.rand(30, 3, dtype=torch.float64), torch.rand(30, 1, dtype=torch.float64)
bk = get_backend("keops")
print("ready", flush=True)
start = time.perf_counter()
bk.kernel_product(x, y, b, kernel="gaussian", blur=0.5)
print("first call", time.perf_counter() - start, flush=True)
"""


def test_a_keops_first_call_waits_for_the_formula_lock_of_a_shared_build_folder(tmp_path):
    """Two processes on one build folder (two Ray workers, two pytest workers): the one that
    arrives second waits on the formula's lock, then loads what the first one built."""
    import fcntl
    import os
    import subprocess
    import sys
    import time

    pytest.importorskip("pykeops")
    env = {**os.environ, "KPBENCH_BUILD_DIR": str(tmp_path)}
    built = subprocess.run([sys.executable, "-c", KEOPS_FIRST_CALL], env=env, text=True,
                           capture_output=True, timeout=300)
    assert "first call" in built.stdout, built.stderr
    locks = list(tmp_path.glob("keops-*/locks/*.lock"))
    assert len(locks) == 1                  # one formula compiled, under its own lock
    with open(locks[0]) as held:
        fcntl.flock(held, fcntl.LOCK_EX)     # as if a process were compiling it right now
        second = subprocess.Popen([sys.executable, "-c", KEOPS_FIRST_CALL], env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while (line := second.stdout.readline()) and line.strip() != "ready":
            pass                             # pykeops' own messages, on stdout
        assert line.strip() == "ready", second.stderr.read()
        time.sleep(3.0)
        fcntl.flock(held, fcntl.LOCK_UN)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    # the library was built already: without the wait the call takes milliseconds
    assert float(out.split()[-1]) >= 2.5, out
