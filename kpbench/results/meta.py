"""Run metadata stored with every row: which code, which machine, which library versions.

``run_metadata()`` returns the :data:`kpbench.results.schema.META_FIELDS` as a dict.
``host_metadata()`` is the machine-dependent part (host, cpu, gpu, versions, flags);
sweep workers on a Ray cluster call it themselves so each row names the node that ran it.

The full environment of a run is stored once per run, in the store's ``runs`` table
(one row per run_id: ``run_id``, ``host``, ``captured_at``, ``environment`` as JSON):
:func:`environment` captures it (every installed distribution and its version, Python,
OS, CPU model and flags, GPU, driver and CUDA versions where present, NumPy's BLAS,
compilers and the environment variables that change results), :func:`record_environment`
stores it, :func:`load_environment` reads it back and :func:`env_diff` lists what differs
between two runs. It is the environment of the process that drives the run; on a Ray
cluster each row's host columns name the node that ran it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import subprocess
import sys
import uuid

from kpbench.results.layout import RUNS, store_root
from kpbench.results.schema import META_FIELDS

META_COLUMNS = [f.name for f in META_FIELDS]


def run_metadata(run_id: str | None = None, sweep: str | None = None,
                 executor: str | None = None) -> dict:
    """The META_FIELDS of one run (a new uuid4 hex ``run_id`` if None)."""
    meta = {
        "run_id": run_id or uuid.uuid4().hex,
        "sweep": sweep,
        "executor": executor,
        "git_commit": git_commit(),
        "started_at": _dt.datetime.now(_dt.timezone.utc),
    }
    meta.update(host_metadata())
    return {name: meta.get(name) for name in META_COLUMNS}


def host_metadata() -> dict:
    """Host, CPU, GPU, library versions and compiler flags of this process's machine."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "gpu": gpu_name(),
        "torch_version": _version("torch"),
        "pykeops_version": _version("pykeops"),
        "ray_version": _version("ray"),
        "numpy_version": _version("numpy"),
        "python_version": platform.python_version(),
        "cxxflags": os.environ.get("CXXFLAGS", ""),
    }


@functools.lru_cache(maxsize=None)
def git_commit(checkout: str | None = None) -> str | None:
    """The commit of the kpbench checkout (``checkout``: another one's folder, e.g. an
    interleaved variant's); None when kpbench is installed (a wheel in a venv that sits
    inside some other git checkout must not record that checkout's commit)."""
    package_dir = (pathlib.Path(checkout).resolve() / "kpbench" if checkout
                   else pathlib.Path(__file__).resolve().parents[1])
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if len(lines) != 2 or pathlib.Path(lines[0]).resolve() != package_dir.parent:
        return None
    return lines[1]


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return f"{name} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


@functools.lru_cache(maxsize=None)
def gpu_name() -> str | None:
    """Name of the first visible CUDA device, None without one (torch only if already importable)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    return name if count == 1 else f"{name} x{count}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the environment of a run, stored once per run ------------------------------------
# environment variables that change what a point computes or how fast
RESULT_ENV_VARS = ("CXXFLAGS", "CFLAGS", "CXX", "CC", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                   "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
RESULT_ENV_PREFIXES = ("KPBENCH_",)


def environment() -> dict:
    """What this process runs on: sections python, os, cpu, gpu, numpy, compilers,
    env (result-changing variables) and packages (every installed distribution)."""
    return {
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "os": {"platform": platform.platform(), "kernel": platform.release(),
               "machine": platform.machine()},
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "numpy": numpy_info(),
        "compilers": compiler_info(),
        "env": result_env_vars(),
        "git_commit": git_commit(),
        "packages": installed_packages(),
    }


def installed_packages() -> dict[str, str]:
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name.lower()] = dist.version
    return dict(sorted(versions.items()))


def cpu_info() -> dict:
    info = {"model": cpu_name(), "count": os.cpu_count(), "flags": _cpuinfo_field("flags")}
    if hasattr(os, "sched_getaffinity"):
        info["affinity"] = _cpu_ranges(sorted(os.sched_getaffinity(0)))
    return info


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_ranges(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    ranges, start = [], None
    for i, cpu in enumerate(cpus):
        start = cpu if start is None else start
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            ranges.append(f"{start}-{cpu}" if cpu != start else str(cpu))
            start = None
    return ",".join(ranges)


def gpu_info() -> dict:
    """Devices, driver, CUDA/cuDNN versions as torch sees them (empty without torch/CUDA)."""
    try:
        import torch
    except ImportError:
        return {}
    info = {"torch_cuda": torch.version.cuda, "available": torch.cuda.is_available()}
    if info["available"]:
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn"] = torch.backends.cudnn.version()
        info["driver"] = _command_output(["nvidia-smi", "--query-gpu=driver_version",
                                          "--format=csv,noheader"])
    return info


def numpy_info() -> dict:
    try:
        import numpy

        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"version": numpy.__version__, "blas": blas.get("name"),
                "blas_version": blas.get("version"),
                "blas_config": blas.get("openblas configuration")}
    except Exception as exc:   # old NumPy without mode="dicts", or a build without the info
        return {"error": f"{type(exc).__name__}: {exc}"}


def compiler_info() -> dict:
    """First line of ``--version`` of the C++ compiler KeOps uses and of nvcc, if present."""
    cxx = os.environ.get("CXX", "g++")
    return {"cxx": cxx, "cxx_version": _command_output([cxx, "--version"]),
            "nvcc_version": _nvcc_version()}


def _nvcc_version() -> str | None:
    text = _command_output(["nvcc", "--version"], first_line=False)
    match = re.search(r"release [^\n]*", text or "")
    return match.group(0) if match else None


def _command_output(command: list[str], first_line: bool = True) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return (text.splitlines() or [None])[0] if first_line else text


def result_env_vars() -> dict[str, str]:
    """The set variables of RESULT_ENV_VARS and those starting with RESULT_ENV_PREFIXES."""
    return {name: value for name, value in sorted(os.environ.items())
            if name in RESULT_ENV_VARS or name.startswith(RESULT_ENV_PREFIXES)}


def record_environment(store, run_id: str, env: dict | None = None,
                       checkout: str | None = None) -> bool:
    """Store this process's environment as the ``runs`` row of ``run_id`` (once: False if
    the run has one already). ``store``: a ResultStore; ``checkout``: the folder of the code
    that measured, where it is not this process's (an interleaved variant's): its commit."""
    if run_id in store.keys(RUNS):
        return False
    env = environment() if env is None else env
    if checkout:
        env = {**env, "git_commit": git_commit(checkout)}
    store.append(RUNS, [{"key": run_id, "run_id": run_id, "host": socket.gethostname(),
                         "captured_at": _dt.datetime.now(_dt.timezone.utc),
                         "environment": json.dumps(env, sort_keys=True, default=str)}])
    return True


def load_environment(path, run_id: str) -> dict | None:
    """The stored environment of ``run_id`` under a results dir (or its ``sweeps`` dir);
    None when the run has none (stored before environments were recorded)."""
    from kpbench.results.store import ResultStore

    runs = ResultStore(store_root(path)).read(RUNS)
    if runs.empty or "run_id" not in runs:
        return None
    match = runs[runs["run_id"] == run_id]
    return json.loads(match["environment"].iloc[-1]) if len(match) else None


def env_diff(a: dict | None, b: dict | None, limit: int = 40) -> list[str]:
    """Lines "section.name: A -> B" for every entry that differs between two environments
    (CPU flags as added/removed sets); a line saying so where one side has none."""
    if a is None or b is None:
        missing = " and ".join(side for side, env in (("baseline", a), ("new", b)) if env is None)
        return [f"environment: not recorded for the {missing} run (cannot compare)"]
    flat_a, flat_b = _flatten(a), _flatten(b)
    lines = []
    for name in sorted(flat_a.keys() | flat_b.keys()):
        old, new = flat_a.get(name), flat_b.get(name)
        if old == new:
            continue
        if name == "cpu.flags" and old and new:
            lines.append(f"{name}: {_set_change(old.split(), new.split())}")
        else:
            lines.append(f"{name}: {_short(old)} -> {_short(new)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more differences"]
    return lines


def _flatten(env: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in env.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value if not isinstance(value, list) else ", ".join(map(str, value))
    return flat


def _set_change(old: list[str], new: list[str]) -> str:
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    return " ".join([f"+{f}" for f in added] + [f"-{f}" for f in removed])


def _short(value, width: int = 80) -> str:
    text = "(absent)" if value is None else str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


__all__ = ["run_metadata", "host_metadata", "git_commit", "META_COLUMNS",
           "environment", "record_environment", "load_environment", "env_diff", "RUNS"]
