"""Host execution of the CUDA kernels (KPBENCH_CUDA_HOST=1): the execution model itself.

tests/test_cuda.py runs kernels.cu through this path and compares it with the references;
here the probe kernels of tests/cuda/host_probes.cu show that the model has CUDA's
semantics: per-thread locals, a real barrier, per-block shared memory, the indices; that
undefined behaviour (a divergent barrier) fails the launch; that the host is never chosen
silently; and that Split's 64-bit end holds near 2^31.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kpbench.backends import availability, get_backend
from kpbench.errors import KPBenchError
from kpbench.backends.cuda import CudaBackend, host, launcher

PROBES = Path(__file__).resolve().parent / "cuda" / "host_probes.cu"
NEG1 = -1                  # 0xFFFFFFFF: the poison of unwritten shared memory, as an int


def run(name, grid, block, smem, *args):
    packed = [("ptr", a.data_ptr()) if isinstance(a, torch.Tensor) else ("int", a) for a in args]
    host.launch(name, grid, block, smem, packed, source=PROBES)


@pytest.mark.parametrize("threads", [256, 1024])
def test_barrier_is_real_and_locals_are_per_thread(threads):
    out = torch.zeros(2 * threads, dtype=torch.int32)
    run("rotate", (2, 1, 1), (threads, 1, 1), 4 * threads, out, 5, 1)
    want = (torch.arange(threads) + 5) % threads
    assert torch.equal(out, torch.cat([want, want]).int())


def test_without_the_barrier_threads_see_what_others_have_not_written_yet():
    """The same probe without __syncthreads is wrong: the threads really interleave only at
    barriers, so a missing barrier shows (poison, or a neighbour's stale value)."""
    out = torch.zeros(256, dtype=torch.int32)
    run("rotate", (1, 1, 1), (256, 1, 1), 4 * 256, out, 1, 0)
    assert (out[:-1] == NEG1).all() and out[-1] == 0


@pytest.mark.parametrize("probe, what", [("half_at_barrier", "128 threads exited and 128 wait"),
                                         ("two_barriers", "not all at the same one")])
def test_a_divergent_barrier_fails_the_launch(probe, what):
    out = torch.zeros(256, dtype=torch.int32)
    with pytest.raises(host.HostBuildError, match=f"divergent __syncthreads.*{what}"):
        run(probe, (1, 1, 1), (256, 1, 1), 0, out)


def test_shared_memory_is_per_block_and_poisoned():
    out = torch.zeros(3 * 64, dtype=torch.int32)
    run("block_local", (3, 1, 1), (64, 1, 1), 4 * 64, out)
    assert (out[:64] == 7).all() and (out[64:] == NEG1).all()


def test_thread_and_block_indices():
    grid, block = (3, 2, 2), (4, 3, 2)
    threads = 3 * 2 * 2 * 4 * 3 * 2
    out = torch.full((threads, 6), -5, dtype=torch.int32)
    run("indices", grid, block, 0, out)
    seen = {tuple(row) for row in out.tolist()}
    assert seen == {(tx, ty, tz, bx, by, bz) for tx in range(4) for ty in range(3) for tz in range(2)
                    for bx in range(3) for by in range(2) for bz in range(2)}


def test_too_much_shared_memory_or_too_many_threads_are_refused():
    out = torch.zeros(2048, dtype=torch.int32)
    with pytest.raises(host.HostBuildError, match="dynamic shared memory"):
        run("rotate", (1, 1, 1), (32, 1, 1), host.SHARED_CAPACITY + 4, out, 1, 1)
    with pytest.raises(host.HostBuildError, match="block of 2048 threads"):
        run("rotate", (1, 1, 1), (2048, 1, 1), 0, out, 1, 1)


@pytest.mark.parametrize("m", [launcher.MAX_ROWS, 2**31 - 1 - 64 * 256, 1_000_003])
def test_split_chunks_cover_the_rows_without_int32_overflow(m):
    """kernels.cu's Split near 2^31 (M too large to allocate here): begin + split_len of the
    last chunk passes 2^31; its end must still be M, not a negative number."""
    geom = launcher.geometry(1, m, 1, 1, 4, host.SM_COUNT)
    assert geom.splits > 1
    out = torch.zeros(2 * geom.splits, dtype=torch.int32)
    run("split_range", (1, geom.splits, 1), (32, 1, 1), 0, m, geom.split_len, out)
    begins, ends = out[0::2].tolist(), out[1::2].tolist()
    assert begins[0] == 0 and ends[-1] == m
    assert begins[1:] == ends[:-1] and all(b < e for b, e in zip(begins, ends))


def test_rows_beyond_32_bit_indices_are_refused_clearly(monkeypatch):
    monkeypatch.setenv(host.ENV, "1")
    x = torch.zeros(1, 1).expand(launcher.MAX_ROWS + 1, 1)     # no memory: a stride-0 view
    y = torch.zeros(3, 1)
    with pytest.raises(KPBenchError, match="too large for the cuda backend.*32-bit"):
        launcher.softmin_lse(x, y, torch.zeros(3), 0.1, 2)


# -- the source and the choice of the host path ------------------------------------------
def test_kernels_differ_for_the_host_only_at_the_ptx_exponential():
    source = host.SOURCE.read_text()
    assert source.count("KPB_HOST_EXECUTION") == 1
    branch = re.search(r"#ifdef KPB_HOST_EXECUTION(.*?)#else(.*?)#endif", source, re.S)
    assert branch and "exp2f" in branch.group(1) and "ex2.approx" in branch.group(2)
    assert source.count("asm(") == 1


def test_kernels_use_only_dynamic_shared_memory():
    """The shim supports `extern __shared__` only (a static one would be per fiber)."""
    lines = [ln for ln in host.SOURCE.read_text().splitlines() if "__shared__" in ln
             and not ln.lstrip().startswith("//")]
    assert lines and all(re.search(r"\bextern\s+__shared__", ln) for ln in lines)


def test_host_execution_is_only_chosen_explicitly(monkeypatch):
    monkeypatch.delenv(host.ENV, raising=False)
    ok, why = availability()["cuda"]
    if not torch.cuda.is_available():
        assert not ok and "host" not in why
    monkeypatch.setenv(host.ENV, "1")
    assert availability()["cuda"] == (True, host.LABEL)
    assert get_backend("cuda").timing_refusal() is not None
    monkeypatch.setenv(host.ENV, "yes")
    with pytest.raises(KPBenchError, match="KPBENCH_CUDA_HOST must be 1"):
        host.enabled()


def test_host_execution_refuses_cuda_tensors_and_foreign_arguments(monkeypatch):
    monkeypatch.setenv(host.ENV, "1")
    x = torch.rand(5, 3, dtype=torch.float64)
    with pytest.raises(KPBenchError, match="computes on CPU tensors"):
        CudaBackend().kernel_product(x.to("meta"), x.to("meta"), torch.rand(5).to("meta"),
                                     kernel="gaussian", blur=0.5, validate=False)
    geom = launcher.geometry(5, 5, 3, 1, 8, host.SM_COUNT)
    with pytest.raises(KPBenchError, match="contiguous"):
        launcher._launch("kpb::kp_forward<double, 0, 3, 4, 1>", geom, x, [x.T, x, x, x])
    with pytest.raises(KPBenchError, match="32-bit"):
        launcher._launch("kpb::kp_forward<double, 0, 3, 4, 1>", geom, x, [x, 2**31])


def test_libraries_are_cached_by_content(monkeypatch, tmp_path):
    monkeypatch.setenv(host.BUILD_ENV, str(tmp_path))
    first = host.build("rotate", 64, PROBES)
    stamp = first.stat().st_mtime_ns
    assert host.build("rotate", 64, PROBES) == first and first.stat().st_mtime_ns == stamp
    assert host.library_path("rotate", 128, PROBES) != first       # another instance
    assert first.parent == tmp_path and first.name.startswith("rotate-")


def test_a_compile_error_is_reported_with_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setenv(host.BUILD_ENV, str(tmp_path))
    with pytest.raises(host.HostBuildError, match="host build of no_such_kernel failed"):
        host.build("no_such_kernel", 64, PROBES)


def test_backends_command_says_host_execution(monkeypatch, capsys):
    from kpbench.cli.main import main

    monkeypatch.setenv(host.ENV, "1")
    assert main(["backends"]) == 0
    assert "cuda     available (host execution: correctness only)" in capsys.readouterr().out


def test_the_gpu_benchmark_refuses_host_execution():
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_cuda.py"
    env = {**os.environ, host.ENV: "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2 and "correctness only" in result.stderr


def test_sweeps_measure_its_accuracy_and_refuse_its_speed_and_memory(monkeypatch):
    """The real backend through kpbench's measure path: host execution gives correct
    numbers (accuracy row ok) but never a timing or a memory figure."""
    from kpbench.bench.measure import run_point
    from kpbench.bench.settings import Settings
    from kpbench.bench.plan import Point

    monkeypatch.setenv(host.ENV, "1")
    pt = Point(op="kernel_product", backend="cuda", kernel="gaussian", N=60, M=70, D=3,
               blur=0.2, p=None, reach=None, dtype="float64", device="cpu", seed=0,
               iters=None, scaling=None)
    settings = Settings(repeats=3, warmup=1)
    for kind in ("speed", "memory"):
        row = run_point(pt, kind, settings)
        assert row["status"] == "unsupported" and "correctness only" in row["error"]
        assert row.get("time_median_s") is None and row.get("peak_mem_bytes") is None
    row = run_point(pt, "accuracy", settings)
    assert row["status"] == "ok", row.get("error")
    assert row["rel_err"] <= 1e-12
