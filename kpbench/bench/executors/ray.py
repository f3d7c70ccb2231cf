"""The ray executor: every point is a Ray task (see :mod:`kpbench.bench.executors.base` for
the timeouts and placement columns; :mod:`.cluster` for reaching the cluster).
"""
from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass

from kpbench.errors import KPBenchError
from kpbench.results.meta import host_metadata
from kpbench.bench.executors.base import OnRow, failure_row, placed, run_point_with_timeout, utc_now
from kpbench.bench.executors.cluster import connect_ray, point_runtime_env
from kpbench.bench.settings import Settings

NODE_DIED = "node died"   # error text of a point whose node died under it (retryable)
WAIT_POLL_S = 1.0
SUBMIT_AHEAD = 2   # tasks kept submitted per CPU/GPU slot of the cluster

STARTED = "started"   # what a point's task yields first: the driver's timeout starts then


def _ray_point(point, kind, settings):
    """The point's Ray task (a streaming generator): yields STARTED, then the row.

    The driver's hard deadline counts from STARTED, so a worker's start-up and imports
    (seconds on a loaded machine) never count against the point's timeout.
    """
    import ray

    host_metadata()   # imports torch & co: never under the alarm (a half-done import poisons the worker)
    yield STARTED
    started = utc_now()
    row = run_point_with_timeout(point, kind, settings)
    yield placed(row, started, node=ray.get_runtime_context().get_node_id(),
                 node_ip=ray.util.get_node_ip_address(),
                 gpu_ids=",".join(str(g) for g in ray.get_gpu_ids()))


@dataclass
class _InFlight:
    point: object
    deadline: float | None = None   # None until the task says it started


def run(points, kind, settings: Settings, on_row: OnRow, on_final: OnRow | None = None) -> None:
    ray = connect_ray(settings, settings.threads)
    check_node_fits(points, settings, node_resources(ray))
    task = ray.remote(max_retries=0, num_returns="streaming")(_ray_point)
    runtime_env = point_runtime_env(ray, settings, settings.cpus_per_point)
    slots = _slots(ray, settings)
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
            slots = _slots(ray, settings)   # nodes may join or die during a sweep
            while (point := _next_fitting(pending, busy, slots)) is not None:
                gen = task.options(**_resources(point, settings), runtime_env=runtime_env).remote(
                    point, kind, settings)
                in_flight[gen] = _InFlight(point)
                _take(busy, point, +1)
            if not in_flight:   # nothing runs and nothing fits: the cluster lost those slots
                _drop_unfittable(pending, kind, on_row)
                continue
            for gen in _ready(ray, in_flight):
                _advance(ray, gen, in_flight[gen], kind, settings, finish)
            for gen in _overdue(in_flight):
                ray.cancel(gen, force=True)
                finish(gen, failure_row(
                    in_flight[gen].point, kind, "timeout",
                    f"exceeded the timeout of {settings.timeout_s:g} s and was still running "
                    f"{settings.hard_grace_s:g} s later (Ray task cancelled, worker killed)"))
    finally:
        for gen in in_flight:   # interrupted: do not leave points running on the cluster
            ray.cancel(gen, force=True)


def check_node_fits(points, settings: Settings, nodes: list[dict]) -> None:
    """Each point's request fits on one live node (``nodes``: their Ray resources); else a
    KPBenchError now, where Ray would wait for ever."""
    for flag, asked, resource, needed in (
            ("--cpus-per-point", settings.cpus_per_point, "CPU", bool(points)),
            ("--gpus-per-point", settings.gpus_per_point, "GPU", any(p.device == "cuda" for p in points))):
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


def _advance(ray, gen, flight: _InFlight, kind, settings, finish) -> None:
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
        flight.deadline = time.monotonic() + settings.timeout_s + settings.hard_grace_s
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
    row["point_ended_at"] = utc_now()
    return row


def _ray_error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {' '.join(lines[:6])}"
    return text[:2000]


def _slots(ray, settings: Settings) -> dict:
    """How many CPU and CUDA points the cluster can run at once now."""
    resources = ray.cluster_resources()
    return {
        "cpu": max(1, int(resources.get("CPU", 1) // settings.cpus_per_point)),
        "cuda": int(resources.get("GPU", 0) // settings.gpus_per_point),
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


def _resources(point, settings: Settings) -> dict:
    if point.device == "cuda":
        return {"num_gpus": settings.gpus_per_point, "num_cpus": settings.cpus_per_point}
    return {"num_cpus": settings.cpus_per_point}
