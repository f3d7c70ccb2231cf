"""Multi-node sweeps on one machine: throughput on 1 vs 2 nodes, a node dying, the driver dying.

    python scripts/multinode_sweep.py ratio     [--points 40] [--work sleep|compute]
    python scripts/multinode_sweep.py gpu
    python scripts/multinode_sweep.py kill-node [--points 16]
    python scripts/multinode_sweep.py kill-driver [--points 16]
    python scripts/multinode_sweep.py all

Each scenario starts its own :class:`local_cluster.LocalCluster` (a head raylet and a
second raylet, one CPU each, both on 127.0.0.1, loopback only), runs the sweep through the ``ray submit``
driver ``scripts/ray_sweep.py`` in a subprocess (``--address`` of that cluster), reads
the rows and prints what they show; the cluster is stopped at the end.

* ``ratio``: the same sweep on the head alone, then with the second raylet joined;
  points per hour from the rows' own start/end times (first start to last end), and
  their ratio. ``--work sleep`` (default): the test op ``_test_sleep`` (a fixed 0.5 s per
  call, twice per point: scheduling, hardly any CPU); ``--work compute``: torch kernel products
  (CPU-bound; on a 2-core machine shared with other work the ratio tells the load too).
* ``gpu``: CUDA points (the test op, which never touches a device) on a head declaring 2
  GPUs it does not have and a GPU-less second raylet with a free CPU: every row names one
  GPU id of the head, two ran at once, none ran on the GPU-less node.
* ``kill-node``: a sweep on both nodes; the second raylet's whole process group is
  SIGKILLed while it runs a point. Its in-flight points must come back as ``error``
  ("node died: NodeDiedError ...", retryable), the sweep finish on the head, and a rerun
  with ``--retry-failed`` measure those points again, and only those.
* ``kill-driver``: the driver is SIGKILLed mid-sweep; the rows it had stored survive and a
  rerun measures only the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from local_cluster import RAY_ENV, LocalCluster  # noqa: E402

SLEEP_S = 0.5
TEST_OPS_PLUGIN = str(ROOT / "tests" / "plugins" / "test_ops.py")   # _test_sleep & co


def sweep_args(points: int, work: str = "sleep", sleep_s: float = SLEEP_S) -> list[str]:
    """``kpbench sweep`` arguments of a ``points``-point speed sweep (distinct seeds)."""
    seeds = ",".join(map(str, range(points)))
    if work == "sleep":
        return ["speed", "--ops", "_test_sleep", "--backends", "numpy", "--dtype", "float64",
                "--N", "10", "--blur", str(sleep_s), "--seed", seeds, "--repeats", "1",
                "--warmup", "0"]
    if work == "compute":
        return ["speed", "--ops", "kernel_product", "--backends", "torch", "--dtype", "float32",
                "--N", "3000", "--seed", seeds, "--repeats", "5", "--warmup", "1"]
    raise SystemExit(f"unknown --work {work!r} (sleep or compute)")


def start_driver(address: str, out: str | os.PathLike, args: list[str]) -> subprocess.Popen:
    """``scripts/ray_sweep.py`` (the ``ray submit`` entry point) on the cluster at ``address``."""
    env = {**os.environ, **RAY_ENV, "KPBENCH_PLUGINS": TEST_OPS_PLUGIN,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, str(HERE / "ray_sweep.py"), *args, "--out", str(out),
           "--address", address, "--no-progress"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_driver(address: str, out, args: list[str], timeout_s: float = 600) -> str:
    driver = start_driver(address, out, args)
    output, _ = driver.communicate(timeout=timeout_s)
    if driver.returncode != 0:
        raise RuntimeError(f"the sweep driver exited with {driver.returncode}:\n{output}")
    return output


def rows(out):
    from kpbench.results.store import SWEEPS, ResultStore

    return ResultStore(out).read(SWEEPS)


def points_per_hour(df) -> float:
    """Points finished per hour, from the rows' own first start to last end."""
    span = (df["point_ended_at"].max() - df["point_started_at"].min()).total_seconds()
    return len(df) * 3600.0 / span


# -- scenarios (each takes a running LocalCluster: head 1 CPU, 2 GPUs declared) --------------
def steady_points_per_hour(df) -> float:
    """Points per hour once every node that ran a point had finished its first one: each
    new driver gets fresh workers on every node, whose first point imports torch & co
    (seconds on a loaded machine), once per node and driver."""
    first_ends = df.sort_values("point_started_at").groupby("node")["point_ended_at"].first()
    warm = first_ends.max()
    late = df[df["point_started_at"] >= warm]
    span = (late["point_ended_at"].max() - warm).total_seconds()
    return len(late) * 3600.0 / span


def ensure_nodes(cluster: LocalCluster, count: int) -> list[str]:
    """The cluster's live node ids, adding 1-CPU GPU-less raylets until there are ``count``."""
    while len(cluster.alive_nodes()) < count:
        cluster.add_node(cpus=1, gpus=0)
    return cluster.alive_nodes()


def scenario_ratio(cluster: LocalCluster, workdir: pathlib.Path, points: int = 40,
                   work: str = "sleep") -> dict:
    """The same sweep on the head alone (the cluster must have one node), then on two."""
    if len(cluster.alive_nodes()) != 1:
        raise RuntimeError("the ratio scenario starts from a one-node cluster")
    args = sweep_args(points, work)
    result = {"points": points, "work": work}
    for nodes in (1, 2):
        ensure_nodes(cluster, nodes)
        out = workdir / f"ratio_{nodes}node"
        started = time.monotonic()
        run_driver(cluster.address, out, args)
        df = rows(out)
        result[f"{nodes}node"] = {
            "wall_s": round(time.monotonic() - started, 1),
            "points_per_hour": round(points_per_hour(df)),
            "steady_points_per_hour": round(steady_points_per_hour(df)),
            "ok": int((df["status"] == "ok").sum()),
            "points_per_node": {node: int(n) for node, n in df["node"].value_counts().items()},
        }
    result["nodes"] = cluster.alive_nodes()   # the head first
    for name in ("points_per_hour", "steady_points_per_hour"):
        result[f"ratio_{name}"] = round(result["2node"][name] / result["1node"][name], 2)
    return result


def scenario_gpu(cluster: LocalCluster, workdir: pathlib.Path, points: int = 6,
                 sleep_s: float = 0.5) -> dict:
    """CUDA test points on the head declaring 2 GPUs, beside a GPU-less node with a free
    CPU. Half a CPU per point, so the 1-CPU head can keep both GPUs busy."""
    head, gpu_less = ensure_nodes(cluster, 2)[:2]
    out = workdir / "gpu"
    args = ["speed", "--ops", "_test_sleep", "--backends", "numpy", "--dtype", "float64",
            "--N", "10", "--blur", str(sleep_s), "--seed", ",".join(map(str, range(points))),
            "--device", "cuda", "--repeats", "1", "--warmup", "0", "--cpus-per-point", "0.5"]
    run_driver(cluster.address, out, args)
    return {"rows": rows(out), "head": head, "gpu_less": gpu_less}


def overlapping_pairs(df) -> int:
    """How many pairs of rows ran at the same time (one started before the other ended)."""
    spans = sorted(zip(df["point_started_at"], df["point_ended_at"]))
    return sum(1 for i, (_, end) in enumerate(spans) for start, _ in spans[i + 1:] if start < end)


def kill_when_busy(cluster: LocalCluster, node_id: str, driver: subprocess.Popen,
                   min_wait_s: float, timeout_s: float = 120) -> float:
    """SIGKILL ``node_id`` once the driver has run ``min_wait_s`` and the node runs a point."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s and driver.poll() is None:
        if time.monotonic() - started >= min_wait_s and cluster.running_tasks(node_id):
            cluster.kill_node(node_id)
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError("the second node never ran a point while the driver was running")


def scenario_kill_node(cluster: LocalCluster, workdir: pathlib.Path, points: int = 16,
                       sleep_s: float = 0.5) -> dict:
    """Kill the second node mid-sweep; then rerun the sweep with --retry-failed (head alone)."""
    second = ensure_nodes(cluster, 2)[1]
    args = sweep_args(points, "sleep", sleep_s)
    out = workdir / "kill_node"
    driver = start_driver(cluster.address, out, args)
    killed_after = kill_when_busy(cluster, second, driver, min_wait_s=8 * sleep_s)
    first_output, _ = driver.communicate(timeout=600)
    first = rows(out)
    rerun_output = run_driver(cluster.address, out, args + ["--retry-failed"])
    return {"killed_after_s": round(killed_after, 1), "driver_rc": driver.returncode,
            "first": first, "after": rows(out), "first_output": first_output,
            "rerun_output": rerun_output, "second_node": second}


def scenario_kill_driver(cluster: LocalCluster, workdir: pathlib.Path, points: int = 16,
                         sleep_s: float = 0.5) -> dict:
    """SIGKILL the driver once 4 rows are stored; then rerun the sweep."""
    ensure_nodes(cluster, 2)
    args = sweep_args(points, "sleep", sleep_s)
    out = workdir / "kill_driver"
    driver = start_driver(cluster.address, out, args)
    deadline = time.monotonic() + 300
    while _stored(out) < 4 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    before = rows(out)
    rerun_output = run_driver(cluster.address, out, args)
    return {"before": before, "after": rows(out), "rerun_output": rerun_output}


def _stored(out) -> int:
    from kpbench.results.store import SWEEPS, ResultStore

    return len(ResultStore(out).keys(SWEEPS))


# -- printing ---------------------------------------------------------------------------
PLACEMENT = ["device", "seed", "status", "node_ip", "node", "gpu_ids", "point_started_at",
             "point_ended_at", "error"]


def show(df) -> str:
    table = df.sort_values("point_started_at")[PLACEMENT].copy()
    table["node"] = table["node"].str[:8]
    table["error"] = table["error"].fillna("").str[:60]
    return table.to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS + ("all",))
    parser.add_argument("--points", type=int, help="sweep size (ratio: 40, the others: 16)")
    parser.add_argument("--work", choices=("sleep", "compute"), default="sleep",
                        help="ratio: what each point does")
    args = parser.parse_args(argv)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    with tempfile.TemporaryDirectory(prefix="kpb-multinode-") as tmp, \
            LocalCluster(head_cpus=1, head_gpus=2) as cluster:
        for name in chosen:
            print(f"== {name}", flush=True)
            print(report(name, cluster, pathlib.Path(tmp), args), flush=True)
    return 0


SCENARIOS = ("ratio", "gpu", "kill-driver", "kill-node")   # in this order on one cluster


def report(name: str, cluster: LocalCluster, workdir: pathlib.Path, args) -> str:
    if name == "ratio":
        return json.dumps(scenario_ratio(cluster, workdir, args.points or 40, args.work), indent=1)
    if name == "gpu":
        r = scenario_gpu(cluster, workdir)
        return (f"head {r['head'][:8]} declares 2 GPUs, node {r['gpu_less'][:8]} none; "
                f"CUDA rows running at the same time (pairs): {overlapping_pairs(r['rows'])}\n"
                + show(r["rows"]))
    if name == "kill-node":
        r = scenario_kill_node(cluster, workdir, args.points or 16)
        return (f"second node killed {r['killed_after_s']} s into the sweep; driver exit "
                f"{r['driver_rc']}\n{show(r['first'])}\n-- after the rerun --\n{show(r['after'])}")
    r = scenario_kill_driver(cluster, workdir, args.points or 16)
    return (f"driver killed with {len(r['before'])} rows stored; after the rerun "
            f"{len(r['after'])} rows, {r['after']['key'].nunique()} keys, "
            f"statuses {r['after']['status'].value_counts().to_dict()}")


if __name__ == "__main__":
    sys.exit(main())
