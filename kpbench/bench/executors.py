"""Executors: run sweep points, hand each finished row to ``on_row`` as it finishes.

Timeouts, the same for both executors: a point runs under a SIGALRM set to the spec's
``timeout_s``, counted from when the point starts in its process, which raises inside
the point; Python code stops at once, a single native call (one big matmul) when it
returns, and the row is recorded as ``timeout``. A point still stuck in native code
``hard_grace_s`` (default :data:`HARD_TIMEOUT_GRACE_S`) seconds later is killed (see below).

``ray`` (default): every point is a Ray task with ``max_retries=0`` (a crash is a
finding, not something to retry). CPU points ask ``num_cpus`` (default 1), CUDA points
``num_gpus`` (default 1) and ``num_cpus``, so Ray spreads them over all CPUs/GPUs of all
nodes; twice as many tasks as the cluster has slots are submitted (the next point
waits at a node, not on the driver; slots are recounted as nodes join or die). Each task first tells the driver it started (after its worker's start-up
and imports); one not done ``timeout_s + hard_grace_s`` after that is cancelled with
``ray.cancel(force=True)`` (its worker is killed) and recorded as ``timeout``. A worker
that dies (os._exit, SIGKILL, the kernel's OOM killer) gives ``error`` with Ray's
message; Ray's own memory monitor killing the task gives ``oom``; a node dying under
its points gives ``error`` "node died: ..." naming the node (retryable: a rerun with
``--retry-failed`` measures those again). The sweep goes on.

Placement: every row names the ``node`` (Ray node id; inline: the host name),
``node_ip``, ``gpu_ids`` (the GPU ids Ray assigned, "" for none) and the point's
``point_started_at``/``point_ended_at`` (UTC, taken where the point ran). Threads: the
workers get OMP_NUM_THREADS/MKL_NUM_THREADS/OPENBLAS_NUM_THREADS = the point's threads
before KeOps' OpenMP or NumPy's BLAS initialise (see :func:`point_runtime_env`).

``inline``: the points run one after another in this process (for debugging, and where
Ray is missing). A point stuck in native code past the grace is recorded as ``timeout``
by a watchdog thread, which then ends the process (exit code 124) rather than hang;
rerunning the sweep resumes after it. A point that kills its process (os._exit, a
segfault) takes an inline sweep down with it (the rows already stored stay); use the
ray executor for crash isolation.
"""
from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import importlib.metadata
import ipaddress
import os
import pathlib
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from kpbench.errors import KPBenchError
from kpbench.results.meta import host_metadata
from kpbench.bench.measure import THREAD_VARIABLES, MeasureSettings, base_row, run_point

EXECUTORS = ("ray", "inline")
HARD_TIMEOUT_GRACE_S = 60.0
NODE_DIED = "node died"   # error text of a point whose node died under it (retryable)
WAIT_POLL_S = 1.0
SUBMIT_AHEAD = 2   # tasks kept submitted per CPU/GPU slot of the cluster

OnRow = Callable[[dict], None]


@dataclass
class ExecutorOptions:
    timeout_s: float = 600.0
    cpus_per_point: float = 1
    gpus_per_point: float = 1
    address: str | None = None      # Ray cluster address; None: "auto" if one runs, else local
    num_cpus: int | None = None     # size of a local Ray cluster started here (None: all cores)
    hard_grace_s: float = HARD_TIMEOUT_GRACE_S   # past the timeout, before a stuck point is killed


def run_points(executor: str, points: list, kind: str, settings: MeasureSettings,
               options: ExecutorOptions, on_row: OnRow, on_hang: OnRow | None = None) -> None:
    if executor == "ray":
        run_ray(points, kind, settings, options, on_row)
    elif executor == "inline":
        run_inline(points, kind, settings, options, on_row, on_hang)
    else:
        raise KPBenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


def failure_row(point, kind: str, status: str, error: str) -> dict:
    """The row of a point that produced none itself (timeout, crashed worker)."""
    row = base_row(point, kind)
    row.update(status=status, error=error)
    return row


# -- inline ----------------------------------------------------------------------
class PointTimeout(BaseException):
    """Raised by SIGALRM inside an inline point (a BaseException: measure must not catch it)."""


def run_inline(points, kind, settings, options, on_row, on_hang=None) -> None:
    for point in points:
        on_row(_run_inline_point(point, kind, settings, options, on_hang))


def run_point_with_timeout(point, kind: str, settings: MeasureSettings, timeout_s: float) -> dict:
    """run_point under a SIGALRM after ``timeout_s`` (main thread only; see the module docstring)."""
    try:
        with _alarm(timeout_s):
            return run_point(point, kind, settings)
    except PointTimeout:
        row = failure_row(point, kind, "timeout", f"exceeded the timeout of {timeout_s:g} s")
        row.update(host_metadata())
        return row


def _run_inline_point(point, kind, settings, options, on_hang):
    hung_row = failure_row(
        point, kind, "timeout",
        f"exceeded the timeout of {options.timeout_s:g} s and was still stuck (in native code) "
        f"{options.hard_grace_s:g} s later: the sweep process was ended (rerun to resume)")
    watchdog = threading.Timer(options.timeout_s + options.hard_grace_s, _hard_timeout,
                               args=(hung_row, on_hang))
    watchdog.daemon = True
    watchdog.start()
    started = _utc_now()
    try:
        row = run_point_with_timeout(point, kind, settings, options.timeout_s)
    finally:
        watchdog.cancel()
    return _placed(row, started, node=socket.gethostname(), node_ip=None,
                   gpu_ids=_inline_gpu_ids(point))


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _placed(row: dict, started: _dt.datetime, *, node, node_ip, gpu_ids: str) -> dict:
    """``row`` with where the point ran and when (started: before run_point, ended: now)."""
    row.update(node=node, node_ip=node_ip, gpu_ids=gpu_ids, point_started_at=started,
               point_ended_at=_utc_now())
    return row


def _inline_gpu_ids(point) -> str:
    """The CUDA device an inline CUDA point ran on ("" for CPU points or without CUDA)."""
    if point.device != "cuda":
        return ""
    import torch

    return str(torch.cuda.current_device()) if torch.cuda.is_available() else ""


class _alarm:
    """SIGALRM after ``seconds`` raising PointTimeout (only in the main thread)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = (threading.current_thread() is threading.main_thread()
                       and hasattr(signal, "SIGALRM"))

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False

    @staticmethod
    def _raise(signum, frame):
        raise PointTimeout()


def _hard_timeout(row: dict, on_hang: OnRow | None) -> None:
    print(f"\nkpbench: point {row['key']} ({row['op']}, {row['backend']}, N={row['N']}) is stuck "
          "past its timeout; recording it as timeout and exiting", file=sys.stderr, flush=True)
    try:
        if on_hang is not None:
            on_hang(row)
    finally:
        os._exit(124)


# -- ray ---------------------------------------------------------------------------
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


def connect_ray(options: ExecutorOptions, threads: int | None = None):
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
    address = options.address or os.environ.get("RAY_ADDRESS")
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
    return start_local_ray(ray, options.num_cpus, runtime_env)


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
        root = str(pathlib.Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        return {"env_vars": {"PYTHONPATH": path}}


DEFAULT_THREADS = 1   # a point's threads unless told otherwise (one CPU per point)


def thread_env_vars(threads: int) -> dict:
    """OpenMP (KeOps CPU) and BLAS (NumPy) thread counts, as environment variables."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def _worker_thread_env() -> dict:
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def point_runtime_env(ray, settings: MeasureSettings, cpus: float) -> dict | None:
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


STARTED = "started"   # what a point's task yields first: the driver's timeout starts then


def _ray_point(point, kind, settings, timeout_s):
    """The point's Ray task (a streaming generator): yields STARTED, then the row.

    The driver's hard deadline counts from STARTED, so a worker's start-up and imports
    (seconds on a loaded machine) never count against the point's timeout.
    """
    import ray

    host_metadata()   # imports torch & co: never under the alarm (a half-done import poisons the worker)
    yield STARTED
    started = _utc_now()
    row = run_point_with_timeout(point, kind, settings, timeout_s)
    yield _placed(row, started, node=ray.get_runtime_context().get_node_id(),
                  node_ip=ray.util.get_node_ip_address(),
                  gpu_ids=",".join(str(g) for g in ray.get_gpu_ids()))


@dataclass
class _InFlight:
    point: object
    deadline: float | None = None   # None until the task says it started


def run_ray(points, kind, settings, options, on_row) -> None:
    ray = connect_ray(options, settings.threads)
    check_node_fits(points, options, node_resources(ray))
    task = ray.remote(max_retries=0, num_returns="streaming")(_ray_point)
    runtime_env = point_runtime_env(ray, settings, options.cpus_per_point)
    slots = _slots(ray, options)
    pending = collections.deque()
    for point in points:
        if point.device == "cuda" and slots["cuda"] == 0:
            on_row(failure_row(point, kind, "unsupported",
                               "device cuda requested but the Ray cluster has no GPU"))
        else:
            pending.append(point)
    in_flight: dict = {}   # generator -> _InFlight
    busy = {"cpu": 0, "cuda": 0}

    def finish(gen, row):
        _take(busy, in_flight.pop(gen).point, -1)
        on_row(row)

    try:
        while pending or in_flight:
            slots = _slots(ray, options)   # nodes may join or die during a sweep
            while (point := _next_fitting(pending, busy, slots)) is not None:
                gen = task.options(**_resources(point, options), runtime_env=runtime_env).remote(
                    point, kind, settings, options.timeout_s)
                in_flight[gen] = _InFlight(point)
                _take(busy, point, +1)
            if not in_flight:   # nothing runs and nothing fits: the cluster lost those slots
                _drop_unfittable(pending, kind, on_row)
                continue
            for gen in _ready(ray, in_flight):
                _advance(ray, gen, in_flight[gen], kind, options, finish)
            for gen in _overdue(in_flight):
                ray.cancel(gen, force=True)
                finish(gen, failure_row(
                    in_flight[gen].point, kind, "timeout",
                    f"exceeded the timeout of {options.timeout_s:g} s and was still running "
                    f"{options.hard_grace_s:g} s later (Ray task cancelled, worker killed)"))
    finally:
        for gen in in_flight:   # interrupted: do not leave points running on the cluster
            ray.cancel(gen, force=True)


def check_node_fits(points, options: ExecutorOptions, nodes: list[dict]) -> None:
    """Each point's request fits on one live node (``nodes``: their Ray resources); else a
    KPBenchError now, where Ray would wait for ever."""
    for flag, asked, resource, needed in (
            ("--cpus-per-point", options.cpus_per_point, "CPU", bool(points)),
            ("--gpus-per-point", options.gpus_per_point, "GPU", any(p.device == "cuda" for p in points))):
        largest = max((node.get(resource, 0.0) for node in nodes), default=0.0)
        # no GPU at all: the CUDA points get "unsupported" rows instead
        if needed and asked > largest and (resource == "CPU" or largest > 0):
            raise KPBenchError(
                f"{flag} {asked:g}: no node of the Ray cluster has {asked:g} {resource}s "
                f"(the largest has {largest:g}); choose at most {largest:g}")


def node_resources(ray) -> list[dict]:
    """The resources (CPU, GPU, ...) of each live node of the cluster."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _ready(ray, in_flight: dict) -> list:
    """The tasks with a new value, waiting at most until the next deadline (or WAIT_POLL_S)."""
    deadlines = [f.deadline for f in in_flight.values() if f.deadline is not None]
    wait_s = max(0.0, min([WAIT_POLL_S] + [d - time.monotonic() for d in deadlines]))
    ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait_s)
    if ready:
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
    return ready


def _advance(ray, gen, flight: _InFlight, kind, options, finish) -> None:
    """Take the task's next value: STARTED (its deadline starts), its row, or its failure."""
    from ray import exceptions as rx

    try:
        value = ray.get(next(gen))
    except StopIteration:
        value = RuntimeError("the point's task ended without a row")
    except rx.OutOfMemoryError as exc:
        return finish(gen, failure_row(flight.point, kind, "oom", _ray_error_text(exc)))
    except rx.NodeDiedError as exc:
        return finish(gen, node_died_row(flight.point, kind, exc))
    except (rx.RayError, Exception) as exc:   # WorkerCrashedError, RayTaskError, ...
        value = exc
    if isinstance(value, BaseException):
        return finish(gen, failure_row(flight.point, kind, "error", _ray_error_text(value)))
    if value == STARTED:
        flight.deadline = time.monotonic() + options.timeout_s + options.hard_grace_s
    else:
        finish(gen, value)


def _overdue(in_flight: dict) -> list:
    now = time.monotonic()
    return [gen for gen, f in in_flight.items() if f.deadline is not None and now >= f.deadline]


_NODE_IN_MESSAGE = re.compile(r"Node IP: (?P<ip>[^\s,]+), node ID: (?P<node>[0-9a-f]+)")


def node_died_row(point, kind: str, exc: BaseException) -> dict:
    """The row of a point whose node died under it: error "node died: ...", the node named."""
    row = failure_row(point, kind, "error", f"{NODE_DIED}: {_ray_error_text(exc)}")
    row["retryable"] = True   # the machine failed, not the point: --retry-failed measures it again
    where = _NODE_IN_MESSAGE.search(str(exc))
    if where:
        row.update(node=where["node"], node_ip=where["ip"])
    row["point_ended_at"] = _utc_now()
    return row


def _ray_error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {' '.join(lines[:6])}"
    return text[:2000]


def _slots(ray, options: ExecutorOptions) -> dict:
    """How many CPU and CUDA points the cluster can run at once now."""
    resources = ray.cluster_resources()
    return {
        "cpu": max(1, int(resources.get("CPU", 1) // options.cpus_per_point)),
        "cuda": int(resources.get("GPU", 0) // options.gpus_per_point),
    }


def _drop_unfittable(pending: collections.deque, kind: str, on_row: OnRow) -> None:
    while pending:
        point = pending.popleft()
        on_row(failure_row(point, kind, "error", f"the Ray cluster has no {point.device.upper()} "
                                                 "slot left (its nodes died during the sweep)"))


def _slots_of(point) -> tuple[str, ...]:
    """A CUDA point holds a GPU and a CPU slot; a CPU point a CPU slot."""
    return ("cpu", "cuda") if point.device == "cuda" else ("cpu",)


def _next_fitting(pending: collections.deque, busy: dict, slots: dict):
    """Pop the first pending point with room (None if none fits now): SUBMIT_AHEAD tasks
    per slot, so the next point already waits at a node when one finishes (it holds no
    resources while queued, and its timeout starts only when it starts)."""
    for i, point in enumerate(pending):
        if all(busy[s] < slots[s] * SUBMIT_AHEAD for s in _slots_of(point)):
            del pending[i]
            return point
    return None


def _take(busy: dict, point, delta: int) -> None:
    for s in _slots_of(point):
        busy[s] += delta


def _resources(point, options: ExecutorOptions) -> dict:
    if point.device == "cuda":
        return {"num_gpus": options.gpus_per_point, "num_cpus": options.cpus_per_point}
    return {"num_cpus": options.cpus_per_point}
