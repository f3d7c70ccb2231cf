"""A multi-node Ray cluster on this one machine, on loopback only, that cleans up after itself.

    with LocalCluster(head_cpus=1, head_gpus=2) as cluster:   # the head raylet
        cluster.add_node(cpus=1, gpus=0)                      # a second raylet
        ... run_sweep(spec, Settings(address=cluster.address)) ...
        cluster.kill_node(node_id)                            # SIGKILL one raylet (node death)

Every raylet runs in its own session (process group): the head is a ``ray start --block``,
each further node a ``python scripts/local_cluster.py --join ADDRESS`` (see below), so
the cluster is stopped by signalling exactly those groups -- never ``ray stop``, which
kills every Ray process of the machine, other users' included. The head has its own port
and temp dir (nothing is written to /tmp/ray, so ``address="auto"`` elsewhere never finds it).

Loopback only: every node's address is 127.0.0.1, in Ray's local-only mode
(``kpbench.bench.executors.cluster.loopback_env``; why, there): Ray's servers then listen on
127.0.0.1, where with any other node address (127.0.0.2 too) they listen on every
interface. The nodes are told apart by their Ray node ids (and process groups), not
their addresses. ``ray start --address`` refuses to join a node in that mode, so a
further node is started the way ``ray.cluster_utils.Cluster.add_node`` (Ray's own
multi-node-on-one-machine harness) starts one: a ``ray._private.node.Node`` given the
GCS address and node address as they are.

GPUs: ``--num-gpus`` declares GPUs a node does not have; Ray then schedules ``num_gpus``
tasks and sets their GPU ids / CUDA_VISIBLE_DEVICES exactly as on a GPU node.

``python scripts/local_cluster.py --head-cpus 1 --head-gpus 2 --node 1:0`` starts one and
prints its address until Ctrl-C.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # a checkout's kpbench, when run as a script

from kpbench.bench.executors.cluster import LOCAL_NODE_IP, loopback_env  # noqa: E402

START_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0     # after SIGTERM, before the whole process group is SIGKILLed
# Token authentication off for these throwaway loopback clusters (Ray 2.60 turns it on
# whenever ~/.ray/auth_token exists, and a joining raylet then fails to authenticate).
# One OpenMP/BLAS thread per worker, inherited from the raylet (as kpbench wants by default).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalCluster:
    """A Ray head raylet and optional extra raylets, each a ``ray start --block`` process group."""

    def __init__(self, head_cpus: int = 1, head_gpus: int = 0):
        self.head_cpus, self.head_gpus = head_cpus, head_gpus
        self.port = free_port(LOCAL_NODE_IP)
        self.temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="kpbrc", dir="/tmp"))
        self.address = f"{LOCAL_NODE_IP}:{self.port}"
        self.groups: list[subprocess.Popen] = []
        self.nodes: dict[str, dict] = {}   # node id -> {"cpus", "gpus", "process"}

    # -- start ---------------------------------------------------------------------
    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._start_node([_ray_cli(), "start", "--block", "--head", f"--port={self.port}",
                          f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                          f"--node-ip-address={LOCAL_NODE_IP}", f"--num-cpus={self.head_cpus}",
                          f"--num-gpus={self.head_gpus}", "--disable-usage-stats"],
                         self.head_cpus, self.head_gpus)

    def add_node(self, cpus: int = 1, gpus: int = 0) -> str:
        """Start one more raylet joined to the head; returns its Ray node id."""
        return self._start_node([sys.executable, str(pathlib.Path(__file__).resolve()), "--join",
                                 self.address, "--cpus", str(cpus), "--gpus", str(gpus)], cpus, gpus)

    def _start_node(self, cmd: list[str], cpus: int, gpus: int) -> str:
        name = f"node{len(self.groups)}"
        log = open(self.temp_dir / f"{name}.log", "w")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **RAY_ENV, **loopback_env()})
        self.groups.append(process)
        node_id = self._wait_for_raylet(name, process)
        self.nodes[node_id] = {"cpus": cpus, "gpus": gpus, "process": process}
        return node_id

    def _wait_for_raylet(self, name: str, process: subprocess.Popen) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: "
                                   f"{self.log(name)[-2000:]}")
            started = self._raylet_node_ids(process)
            if started:
                return started[0]
            time.sleep(0.5)
        raise RuntimeError(f"the raylet of {name} did not start within {START_TIMEOUT_S:g} s")

    def log(self, name: str) -> str:
        path = self.temp_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- inspect -------------------------------------------------------------------
    def _raylet_node_ids(self, group: subprocess.Popen | None = None) -> list[str]:
        """Node ids of the live raylets of one node's process group (None: of every node)."""
        groups = {p.pid for p in ([group] if group else self.groups)}
        ids = [_flag(args, "--node_id") for pid, args in _processes()
               if "/raylet" in args[0] and _group(pid) in groups]
        return [i for i in ids if i]

    def alive_nodes(self) -> list[str]:
        """Ids of the started nodes whose raylet still runs, the head first."""
        alive = set(self._raylet_node_ids())
        return [node for node in self.nodes if node in alive]

    def raylet_pid(self, node_id: str) -> int:
        for pid, args in _processes():
            if "/raylet" in args[0] and _flag(args, "--node_id") == node_id:
                return pid
        raise KeyError(f"no raylet process for node {node_id}")

    def running_tasks(self, node_id: str, name: str = "_ray_point") -> int:
        """How many workers of this node's raylet are running a task named ``name`` now."""
        raylet = self.raylet_pid(node_id)
        return sum(1 for pid, args in _processes()
                   if args[0].startswith(f"ray::{name}") and _parent(pid) == raylet)

    def wait_for_resources(self, cpus: float, timeout_s: float = 60.0) -> None:
        """Until the head reports ``cpus`` CPUs in total (new nodes take a moment to show)."""
        import ray

        deadline = time.monotonic() + timeout_s
        while ray.cluster_resources().get("CPU", 0) < cpus:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster has {ray.cluster_resources()} after {timeout_s:g} s")
            time.sleep(0.5)

    # -- stop ----------------------------------------------------------------------
    def kill_node(self, node_id: str) -> None:
        """SIGKILL the node's whole process group at once -- raylet, workers, agents: what a
        machine dying looks like to the rest of the cluster."""
        process = self.nodes[node_id]["process"]
        workers = [pid for pid, _ in _processes() if _parent(pid) == self.raylet_pid(node_id)]
        _signal_group(process.pid, signal.SIGKILL)
        for pid in workers:   # in case a worker left the group
            _kill(pid)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in reversed(self.groups):   # the extra raylets first, the head last
            _end_group(process, timeout_s=STOP_GRACE_S)
        for pid, args in _processes():          # anything left that names our temp dir
            if any(str(self.temp_dir) in a for a in args):
                _kill(pid)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_cli() -> str:
    return str(pathlib.Path(sys.executable).with_name("ray")) if pathlib.Path(
        sys.executable).with_name("ray").exists() else "ray"


def _processes():
    """(pid, argv) of every process we can read."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if args:
            yield int(entry.name), args


def _stat_field(pid: int, index: int) -> int | None:
    """A numeric field of /proc/PID/stat, counted after the command name (0: the state)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[index])


def _parent(pid: int) -> int | None:
    return _stat_field(pid, 1)


def _group(pid: int) -> int | None:
    return _stat_field(pid, 2)


def _flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _end_group(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the process group of ``process`` (``ray start --block`` stops its children),
    SIGKILL whatever of the group is still there after ``timeout_s``."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def join_node(address: str, cpus: int, gpus: int) -> None:
    """Run one more raylet of the loopback cluster at ``address`` until SIGTERM (what
    ``ray.cluster_utils.Cluster.add_node`` does; ``ray start --address`` refuses in Ray's
    local-only mode). Its Ray processes are this process's children, in its group."""
    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        node_ip_address=LOCAL_NODE_IP, gcs_address=address, num_cpus=cpus, num_gpus=gpus,
        include_log_monitor=False,          # one per machine: the head's
        node_manager_port=0, min_worker_port=0, max_worker_port=0,
        dashboard_agent_listen_port=None)   # any free port: the head's agent has 52365
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # exit handlers stop the node
    ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--head-gpus", type=int, default=0)
    parser.add_argument("--node", action="append", default=[], metavar="CPUS:GPUS",
                        help="one more raylet (repeatable)")
    parser.add_argument("--join", metavar="ADDRESS", help="(internal) run one more raylet of the "
                        "cluster at ADDRESS, with --cpus/--gpus")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=0)
    args = parser.parse_args(argv)
    if args.join:
        join_node(args.join, args.cpus, args.gpus)
    with LocalCluster(args.head_cpus, args.head_gpus) as cluster:
        for spec in args.node:
            cpus, _, gpus = spec.partition(":")
            cluster.add_node(int(cpus), int(gpus or 0))
        print(f"RAY_ADDRESS={cluster.address}  nodes: "
              f"{[(i[:8], n['cpus'], n['gpus']) for i, n in cluster.nodes.items()]}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
