"""Sweeps end to end through the inline executor and a real local Ray cluster (2 CPUs):
same rows from both, failures recorded without losing the others, resume after the
driver is killed, the Parquet schema."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kpbench.results.schema import SWEEP_SCHEMA
from kpbench.results.store import SWEEPS, ResultStore
from conftest import TEST_OPS_PLUGIN
from kpbench.bench.executors.cluster import _worker_thread_env, point_runtime_env, thread_env_vars
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import expand
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _test_ops(test_ops):
    pass


def options(out, executor="inline", **kw) -> Settings:
    return Settings(executor=executor, out=str(out), progress=False, **kw)


def stored(out) -> pd.DataFrame:
    return ResultStore(out).read(SWEEPS)


def assert_schema_is_the_sweep_schema(out) -> None:
    parts = ResultStore(out).parts(SWEEPS)
    assert parts
    for part in parts:
        assert pq.read_schema(part).remove_metadata() == SWEEP_SCHEMA


def test_inline_and_ray_give_the_same_rows(ray_cluster, tmp_path):
    spec, measured = sweep_from_dict({"kind": "speed", "ops": "kernel_product,kernel_product_grad,sinkhorn",
                                      "backends": "numpy,torch", "N": "40,80", "dtype": "float32,float64",
                                      "iters": "3,conv"})
    inline = run_sweep(spec, options(tmp_path / "inline", **measured))
    ray = run_sweep(spec, options(tmp_path / "ray", "ray", **measured))
    assert inline.counts == ray.counts == {"ok": 22, "unsupported": 2}   # numpy has no autograd
    a = stored(tmp_path / "inline").set_index("key").sort_index()
    b = stored(tmp_path / "ray").set_index("key").sort_index()
    assert list(a.index) == list(b.index) == sorted(p.key("speed") for p in expand(spec))
    assert (a["status"] == b["status"]).all()
    assert np.allclose(a["value"], b["value"], rtol=1e-6, equal_nan=True)
    assert a["iterations"].equals(b["iterations"])
    assert set(a["executor"]) == {"inline"} and set(b["executor"]) == {"ray"}
    ok = b[b["status"] == "ok"]
    assert (ok["repeats"] == Settings().repeats).all() and (ok["time_median_s"] > 0).all()
    assert_schema_is_the_sweep_schema(tmp_path / "ray")
    assert str(tmp_path / "ray" / "sweeps") in ray.summary()
    # where and when each point ran
    assert set(a["node"]) == {socket.gethostname()} and set(a["gpu_ids"]) == {""}
    assert set(b["node"]) == {n["NodeID"] for n in ray_cluster.nodes() if n["Alive"]}
    assert set(b["gpu_ids"]) == {""} and b["node_ip"].str.startswith("127.").all()   # loopback
    for rows in (a, b):
        assert (rows["point_started_at"] < rows["point_ended_at"]).all()
        assert (rows["point_started_at"] >= rows["started_at"]).all()


def test_ray_workers_get_the_points_openmp_and_blas_threads(ray_cluster):
    # the session cluster's workers inherited one thread: no per-task runtime_env needed
    assert point_runtime_env(ray_cluster, Settings(threads=1), 1) is None
    env = point_runtime_env(ray_cluster, Settings(threads=2), 1)
    assert env == {"env_vars": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                                "OPENBLAS_NUM_THREADS": "2"}}

    def worker_env():
        import kpbench

        return {**_worker_thread_env(), "kpbench": kpbench.__file__}

    got = ray_cluster.get(ray_cluster.remote(worker_env).options(runtime_env=env).remote())
    assert got == {**thread_env_vars(2), "kpbench": str(ROOT / "kpbench" / "__init__.py")}


def test_cuda_points_on_a_ray_cluster_without_gpus_are_unsupported(ray_cluster, tmp_path):
    if ray_cluster.cluster_resources().get("GPU", 0):
        pytest.skip("the test cluster has a GPU")
    spec, measured = sweep_from_dict({"kind": "speed", "backends": "torch", "N": "50", "device": "cpu,cuda"})
    result = run_sweep(spec, options(tmp_path, "ray", **measured))
    rows = stored(tmp_path).set_index("device")
    assert result.counts == {"ok": 1, "unsupported": 1}
    assert rows.loc["cuda", "error"] == "device cuda requested but the Ray cluster has no GPU"


def test_ray_records_raises_timeouts_and_dead_workers_and_finishes(ray_cluster, tmp_path):
    spec, measured = sweep_from_dict({"kind": "speed", "backends": "numpy", "dtype": "float64", "N": "30",
                                      "ops": "_test_raise,_test_exit,_test_kill,_test_sleep,_test_hang,kernel_product",
                                      "blur": "0.2,30", "repeats": 1, "warmup": 0, "timeout_s": 4})
    started = time.monotonic()
    result = run_sweep(spec, options(tmp_path, "ray", hard_grace_s=3, **measured))
    assert time.monotonic() - started < 60
    rows = stored(tmp_path)
    status = {(r.op, r.blur): r.status for r in rows.itertuples()}
    error = {(r.op, r.blur): r.error for r in rows.itertuples()}
    assert len(rows) == 12 and rows["key"].is_unique
    for blur in (0.2, 30.0):
        assert status["_test_raise", blur] == "error"
        assert error["_test_raise", blur] == "RuntimeError: test op raised on purpose"
        for op in ("_test_exit", "_test_kill"):   # the worker died: Ray says so
            assert status[op, blur] == "error" and "Error" in error[op, blur], error[op, blur]
        assert status["kernel_product", blur] == "ok"
    assert status["_test_sleep", 0.2] == status["_test_hang", 0.2] == "ok"
    # a Python-level overrun is stopped by the alarm in the worker ...
    assert status["_test_sleep", 30.0] == "timeout" and error["_test_sleep", 30.0] == "exceeded the timeout of 4 s"
    # ... one deaf to it (native code) is cancelled by the driver, its worker killed
    assert status["_test_hang", 30.0] == "timeout" and "Ray task cancelled" in error["_test_hang", 30.0]
    assert result.counts == {"ok": 4, "error": 6, "timeout": 2}


def test_inline_records_a_raise_and_a_timeout_and_finishes(tmp_path):
    spec, measured = sweep_from_dict({"kind": "speed", "ops": "_test_raise,_test_sleep,kernel_product",
                                      "backends": "numpy", "dtype": "float64", "N": "30", "blur": "0.1,30",
                                      "repeats": 1, "warmup": 0, "timeout_s": 1.5})
    started = time.monotonic()
    result = run_sweep(spec, options(tmp_path, **measured))
    assert time.monotonic() - started < 20   # the 30 s sleep was cut at 1.5 s
    rows = {(r.op, r.blur): r for r in stored(tmp_path).itertuples()}
    assert rows["_test_sleep", 30.0].status == "timeout"
    assert "timeout of 1.5 s" in rows["_test_sleep", 30.0].error
    assert rows["_test_sleep", 0.1].status == "ok"
    assert rows["_test_raise", 0.1].status == "error"
    assert rows["kernel_product", 30.0].status == "ok"
    assert result.counts == {"ok": 3, "error": 2, "timeout": 1}


def test_inline_ends_a_sweep_stuck_in_native_code_and_keeps_its_rows(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from kpbench import plugins
        plugins.use({TEST_OPS_PLUGIN!r})
        from kpbench.bench.parse import sweep_from_dict
        from kpbench.bench.settings import Settings
        from kpbench.bench.sweep import run_sweep
        spec, measured = sweep_from_dict({{"kind": "speed", "ops": "kernel_product,_test_hang", "backends": "numpy",
                                          "dtype": "float64", "N": "30", "blur": "30", "repeats": 1,
                                          "warmup": 0, "timeout_s": 1}})
        run_sweep(spec, Settings(**measured, executor="inline", out={str(tmp_path)!r}, hard_grace_s=1,
                                   progress=False))
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 124, done.stdout + done.stderr
    assert "not reached" not in done.stdout and "stuck past its timeout" in done.stderr
    rows = stored(tmp_path).set_index("op")
    assert rows.loc["kernel_product", "status"] == "ok"   # flushed before the exit
    assert rows.loc["_test_hang", "status"] == "timeout"
    assert "sweep process was ended" in rows.loc["_test_hang", "error"]


def test_preflight_refusal_in_a_sweep_is_stored_as_skipped(tmp_path):
    spec, measured = sweep_from_dict({"kind": "memory", "backends": "torch,keops", "N": "1000",
                                      "memory_budget": "1MiB"})
    run_sweep(spec, options(tmp_path, **measured))
    rows = stored(tmp_path).set_index("backend")
    assert rows.loc["torch", "status"] == "skipped"
    assert rows.loc["torch", "mem_estimate_bytes"] == 3 * 1000 * 1000 * 4
    assert "12000000 bytes" in rows.loc["torch", "error"]
    assert rows.loc["keops", "status"] == "ok"   # not dense: no estimate, no refusal


def test_resume_after_the_driver_is_killed_loses_and_duplicates_nothing(ray_cluster, tmp_path):
    argv = ["speed", "--ops", "_test_sleep", "--backends", "numpy", "--dtype", "float64",
            "--N", "10", "--blur", "0.25", "--seed", ",".join(map(str, range(24))),
            "--repeats", "1", "--warmup", "0", "--out", str(tmp_path),
            "--address", ray_cluster.get_runtime_context().gcs_address, "--no-progress"]
    # the driver is scripts/ray_sweep.py, the `ray submit` entry point, on the test cluster
    env = {**os.environ, "KPBENCH_PLUGINS": TEST_OPS_PLUGIN, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "ray_sweep.py"), *argv],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = ResultStore(tmp_path)
    deadline = time.monotonic() + 90
    while len(store.keys(SWEEPS)) < 4 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    out = driver.communicate()[0].decode()
    before = stored(tmp_path)
    assert 4 <= len(before) < 24, out    # killed midway
    assert before["key"].is_unique

    spec, measured = sweep_from_dict({"kind": "speed", "ops": "_test_sleep", "backends": "numpy",
                                      "dtype": "float64", "N": "10", "blur": "0.25", "seed": list(range(24)),
                                      "repeats": 1, "warmup": 0})
    result = run_sweep(spec, options(tmp_path, "ray", **measured))
    after = stored(tmp_path)
    assert result.already_stored == len(before) and sum(result.counts.values()) == 24 - len(before)
    assert len(after) == 24 and after["key"].is_unique
    assert set(after["key"]) == {p.key("speed") for p in expand(spec)}
    assert (after["status"] == "ok").all()
    # a third run finds everything stored and measures nothing
    again = run_sweep(spec, options(tmp_path, "ray", **measured))
    assert again.already_stored == 24 and again.counts == {} and len(stored(tmp_path)) == 24
    # --no-resume measures again (new rows, new run)
    one, one_measured = sweep_from_dict({"kind": "speed", "ops": "_test_sleep", "backends": "numpy",
                                         "dtype": "float64", "N": "10", "blur": "0.25", "seed": "0"})
    redo = run_sweep(one, options(tmp_path, resume=False, **one_measured))
    assert redo.counts == {"ok": 1} and len(stored(tmp_path)) == 25
