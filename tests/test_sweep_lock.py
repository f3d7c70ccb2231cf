"""One sweep at a time per results folder: a second one exits 2 naming the first's pid, or
with --wait waits and then skips what the first stored (no key measured twice)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from conftest import TEST_OPS_PLUGIN
from kpbench.results.layout import LOCK_FILE
from kpbench.results.lock import StoreBusy, describe_holder, store_lock
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.main import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEEDS = 6
# 6 points of _test_sleep, 1 s per call, 3 calls each (first call, calibration, 1 sample): ~18 s
SLEEPY = ["sweep", "speed", "--ops", "_test_sleep", "--backends", "numpy", "--dtype", "float64",
          "--N", "10", "--blur", "1.0", "--seed", ",".join(map(str, range(SEEDS))),
          "--repeats", "1", "--warmup", "0", "--executor", "inline", "--no-progress"]


def kpbench(*args: str) -> subprocess.Popen:
    env = {**os.environ, "KPBENCH_PLUGINS": TEST_OPS_PLUGIN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "kpbench", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_holder(out: pathlib.Path, pid: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not describe_holder(out / LOCK_FILE).startswith(f"pid {pid} "):
        assert time.monotonic() < deadline, "the first sweep never took the lock"
        time.sleep(0.2)


def test_a_second_sweep_into_one_store_exits_2_or_waits_and_measures_nothing_twice(tmp_path):
    out = tmp_path / "store"
    first = kpbench(*SLEEPY, "--out", str(out))
    wait_for_holder(out, first.pid)
    refused = kpbench(*SLEEPY, "--out", str(out))
    waiting = kpbench(*SLEEPY, "--out", str(out), "--wait")
    _, refused_err = refused.communicate(timeout=120)
    assert refused.returncode == 2, refused_err
    assert f"is being written by another sweep (pid {first.pid} on host" in refused_err
    assert first.poll() is None          # refused while the first was still measuring
    first_out, first_err = first.communicate(timeout=300)
    waited_out, waited_err = waiting.communicate(timeout=300)
    assert first.returncode == 0 and waiting.returncode == 0, first_err + waited_err
    assert f"waiting for the sweep of pid {first.pid} on host" in waited_err
    assert f"sweep speed: {SEEDS} points, {SEEDS} run (" in first_out
    assert f"{SEEDS} points, 0 run (nothing run), {SEEDS} already stored" in waited_out
    rows = ResultStore(out).read(SWEEPS)
    assert len(rows) == SEEDS and rows["key"].is_unique and set(rows["status"]) == {"ok"}


def test_every_writer_of_a_store_takes_the_lock(tmp_path, capsys):
    """run_sweep (sweep, rerun, calibrate) and interleaved sweeps: refused while it is held."""
    from kpbench.bench.interleave import Variant

    spec, measured = sweep_from_dict({"kind": "speed", "ops": "kernel_product", "backends": "numpy",
                                      "dtype": "float64", "N": "10", "repeats": 1, "warmup": 0})
    with store_lock(tmp_path):
        with pytest.raises(StoreBusy, match=f"another sweep \\(pid {os.getpid()} on host"):
            run_sweep(spec, Settings(**measured, executor="inline", out=str(tmp_path), progress=False))
        assert main(["sweep", "speed", "--ops", "kernel_product", "--backends", "numpy",
                     "--N", "10", "--out", str(tmp_path), "--executor", "inline"]) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    with store_lock(tmp_path / "b"):
        with pytest.raises(StoreBusy):
            run_sweep(spec, Settings(out=str(tmp_path), progress=False, **measured),
                      variants=[Variant("a"), Variant("b")])
    assert not (tmp_path / SWEEPS).exists() and not (tmp_path / "a" / SWEEPS).exists()
    # released: the sweep runs
    run_sweep(spec, Settings(**measured, executor="inline", out=str(tmp_path), progress=False))
    assert len(ResultStore(tmp_path).read(SWEEPS)) == 1


# -- a lock file's text --------------------------------------------------------------------
def test_the_holder_named_from_a_lock_file_is_cleaned(tmp_path):
    path = tmp_path / ".sweep.lock"
    path.write_text(json.dumps({"pid": 12, "host": "h\x1b[2J\nx", "since": "t", "command": "c"}))
    assert describe_holder(path) == "pid 12 on host h[2Jx since t: c"
    for text in ("", "not json", '{"pid": "12; rm"}', "[1]"):
        path.write_text(text)
        assert describe_holder(path) == "a process that has not written its pid yet"
