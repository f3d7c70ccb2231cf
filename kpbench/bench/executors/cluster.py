"""Reaching a Ray cluster: connect to a running one or start a local one on loopback,
and the environment its workers need (kpbench importable, OpenMP/BLAS thread counts).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import os
import pathlib
import socket
import sys

from kpbench.errors import KPBenchError
from kpbench.bench.measure import THREAD_VARIABLES
from kpbench.bench.settings import DEFAULT_THREADS, Settings

# A one-machine cluster listens on loopback only. Ray 2.60's gRPC servers (GCS, raylet,
# object manager, every worker, the dashboard agent) listen on 127.0.0.1 when the node
# address is 127.0.0.1 and on every interface for any other one, 127.0.0.2 included
# (src/ray/rpc/grpc_server.cc, GrpcServer::Run: listen_to_localhost_only ? localhost : all
# interfaces); the agents' HTTP and metrics servers, the monitor's and the dashboard's
# metrics servers follow the node address the same way. No flag, system config or
# environment variable names another bind address. But Ray's Python turns 127.0.0.1, as a
# node address or as the address of a cluster to join, into the machine's routable one
# (services.resolve_ip_for_localhost) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: its
# local-only mode, the default on Windows and macOS. So kpbench's local clusters run on
# 127.0.0.1 in that mode, and so do the drivers and raylets that reach them.
LOCAL_NODE_IP = "127.0.0.1"
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_env() -> dict[str, str]:
    """The environment of a process that starts, joins or reaches a Ray cluster on
    loopback (``ray start --head --node-ip-address`` :data:`LOCAL_NODE_IP`, a raylet joining
    it, a driver): Ray's local-only mode, inherited by every Ray process it starts."""
    return {LOCAL_ONLY_VARIABLE: "0"}


@contextlib.contextmanager
def loopback_ray():
    """:func:`loopback_env` in this process while it starts or reaches a loopback cluster.

    Ray reads the variable once, at ``import ray`` (``ray_constants.ENABLE_RAY_CLUSTER``),
    and ray may be imported already: that constant is set too. Both are restored after, so
    a later ``ray start --address`` (refused in local-only mode) or a remote cluster (whose
    raylets must reach this driver at its routable address) is not affected."""
    saved_env = {name: os.environ.get(name) for name in loopback_env()}
    os.environ.update(loopback_env())
    constants = sys.modules.get("ray._private.ray_constants")
    saved_flag = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved_flag


def start_local_ray(ray, num_cpus: int | None = None, runtime_env: dict | None = None):
    """A fresh one-machine cluster of this process's own (never another process's ``ray
    start``), every process of it listening on loopback only; no dashboard."""
    with loopback_ray():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, _node_ip_address=LOCAL_NODE_IP)
    return ray


def connect_ray(settings: Settings, threads: int | None = None):
    """Connect to the running cluster (``address`` / RAY_ADDRESS / a local one), else start one.

    A local cluster started here hands ``threads`` OpenMP/BLAS threads (the environment
    variables) to its workers (see :func:`point_runtime_env`)."""
    try:
        import ray
    except ImportError:
        raise KPBenchError("the ray executor needs Ray: pip install 'kpbench[ray]' "
                           "(or run with --executor inline)") from None

    if ray.is_initialized():
        return ray
    runtime_env = worker_runtime_env()
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        with _loopback_if(_on_loopback(address)):
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return ray
    running = _local_cluster_address()
    if running is not None:
        try:
            with _loopback_if(_on_loopback(running)):
                ray.init(address="auto", runtime_env=runtime_env, log_to_driver=False)
            return ray
        except ConnectionError:
            pass   # a stale record of a cluster that is gone: start our own
    os.environ.update(thread_env_vars(threads or DEFAULT_THREADS))   # inherited by its workers
    return start_local_ray(ray, settings.num_cpus, runtime_env)


def _loopback_if(condition: bool):
    return loopback_ray() if condition else contextlib.nullcontext()


def _on_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port``) names a loopback host."""
    host = address.split("://")[-1].rpartition(":")[0].strip("[]") or address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach a Ray cluster at {address}: {exc}") from None


def _local_cluster_address() -> str | None:
    """The address ``ray start`` recorded for the cluster running here, if any."""
    try:
        return pathlib.Path("/tmp/ray/ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def worker_runtime_env() -> dict | None:
    """Make a source checkout importable in the workers (an installed kpbench already is)."""
    try:
        importlib.metadata.version("kpbench")
        return None
    except importlib.metadata.PackageNotFoundError:
        root = str(pathlib.Path(__file__).resolve().parents[3])   # kpbench/bench/executors/cluster.py
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        return {"env_vars": {"PYTHONPATH": path}}


def thread_env_vars(threads: int) -> dict:
    """OpenMP (KeOps CPU) and BLAS (NumPy) thread counts, as environment variables."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def _worker_thread_env() -> dict:
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def point_runtime_env(ray, settings: Settings, cpus: float) -> dict | None:
    """The per-task runtime_env that gives a point's worker ``settings.threads`` OpenMP
    and BLAS threads before the libraries initialise (setting them in the task would be
    too late), or None where the job's workers already have exactly these values.

    A probe task asks one worker. Workers inherit the environment of their raylet (a
    local cluster started by :func:`connect_ray` gets the values that way; so can a
    ``ray start`` run with them), and then Ray's prestarted workers run the points. Else
    the per-task runtime_env (merged by Ray with the job's env_vars) makes Ray start
    dedicated workers on demand: seconds each on a loaded machine, once per worker.
    """
    if not settings.threads:
        return None
    wanted = thread_env_vars(settings.threads)
    probe = ray.remote(max_retries=0, num_cpus=cpus)(_worker_thread_env)
    if ray.get(probe.remote(), timeout=300) == wanted:
        return None
    return {"env_vars": wanted}

