"""Run metadata stored with every row: which code, which machine, which library versions.

``run_metadata()`` returns the :data:`kpbench.results.schema.META_FIELDS` as a dict.
``host_metadata()`` is the machine-dependent part (host, cpu, gpu, versions, flags);
sweep workers on a Ray cluster call it themselves so each row names the node that ran it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import os
import pathlib
import platform
import socket
import subprocess
import uuid

from kpbench.results.schema import META_FIELDS

META_COLUMNS = [f.name for f in META_FIELDS]
HOST_COLUMNS = ("host", "cpu", "gpu", "torch_version", "pykeops_version", "ray_version",
                "numpy_version", "python_version", "cxxflags")


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
def git_commit() -> str | None:
    """The commit of the kpbench checkout (None when installed without git)."""
    package_dir = pathlib.Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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


__all__ = ["run_metadata", "host_metadata", "git_commit", "META_COLUMNS", "HOST_COLUMNS"]
