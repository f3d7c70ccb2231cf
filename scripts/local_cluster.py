"""A multi-node Ray cluster on this one machine, on loopback addresses, that cleans up after itself.

    with LocalCluster(head_cpus=1, head_gpus=2) as cluster:   # head raylet on 127.0.0.2
        cluster.add_node(cpus=1, gpus=0)                      # a second raylet on 127.0.0.3
        ... run_sweep(spec, RunOptions(address=cluster.address)) ...
        cluster.kill_node(node_id)                            # SIGKILL one raylet (node death)

Every raylet is a ``ray start --block`` in its own session (process group), so the cluster
is stopped by signalling exactly those groups -- never ``ray stop``, which kills every
Ray process of the machine, other users' included. The head has its own port and
temp dir (nothing is written to /tmp/ray, so ``address="auto"`` elsewhere never finds it).

Node addresses are 127.0.0.2, 127.0.0.3, ...: Ray rewrites ``--node-ip-address=127.0.0.1``
(and ``localhost``) into the machine's routable address (``resolve_ip_for_localhost``),
while any other loopback address is kept as given.

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

    def __init__(self, head_cpus: int = 1, head_gpus: int = 0, base_ip: str = "127.0.0.",
                 first_host: int = 2):
        self.head_cpus, self.head_gpus = head_cpus, head_gpus
        self.base_ip, self.next_host = base_ip, first_host
        self.port = free_port()
        self.temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="kpbrc", dir="/tmp"))
        self.head_ip = self._next_ip()
        self.address = f"{self.head_ip}:{self.port}"
        self.groups: list[subprocess.Popen] = []
        self.nodes: dict[str, dict] = {}   # node id -> {"ip", "cpus", "gpus", "process"}

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
        self._ray_start(["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                         "--include-dashboard=false"], self.head_ip, self.head_cpus, self.head_gpus)

    def add_node(self, cpus: int = 1, gpus: int = 0) -> str:
        """Start one more raylet joined to the head; returns its Ray node id."""
        return self._ray_start([f"--address={self.address}"], self._next_ip(), cpus, gpus)

    def _next_ip(self) -> str:
        ip = f"{self.base_ip}{self.next_host}"
        self.next_host += 1
        return ip

    def _ray_start(self, args: list[str], ip: str, cpus: int, gpus: int) -> str:
        known = set(self._alive_node_ids()) if self.nodes else set()
        log = open(self.temp_dir / f"ray_start_{ip}.log", "w")
        cmd = [_ray_cli(), "start", "--block", *args, f"--node-ip-address={ip}",
               f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--disable-usage-stats"]
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **RAY_ENV})
        self.groups.append(process)
        node_id = self._wait_for_new_node(known, ip, process)
        self.nodes[node_id] = {"ip": ip, "cpus": cpus, "gpus": gpus, "process": process}
        return node_id

    def _wait_for_new_node(self, known: set, ip: str, process: subprocess.Popen) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ray start for {ip} exited with {process.returncode}: "
                                   f"{self.log(ip)[-2000:]}")
            new = [n for n in self._raylet_node_ids(ip) if n not in known]
            if new:
                return new[0]
            time.sleep(0.5)
        raise RuntimeError(f"the raylet on {ip} did not start within {START_TIMEOUT_S:g} s")

    def log(self, ip: str) -> str:
        path = self.temp_dir / f"ray_start_{ip}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- inspect -------------------------------------------------------------------
    def _raylet_node_ids(self, ip: str | None = None) -> list[str]:
        """Node ids of this cluster's live raylet processes (from their command lines)."""
        ids = []
        for pid, args in _processes():
            if "/raylet" in args[0] and any(str(self.temp_dir) in a for a in args):
                node_ip = _flag(args, "--node_ip_address")
                if ip is None or node_ip == ip:
                    ids.append(_flag(args, "--node_id"))
        return [i for i in ids if i]

    def _alive_node_ids(self) -> list[str]:
        return self._raylet_node_ids()

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


def _parent(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--head-gpus", type=int, default=0)
    parser.add_argument("--node", action="append", default=[], metavar="CPUS:GPUS",
                        help="one more raylet (repeatable)")
    args = parser.parse_args(argv)
    with LocalCluster(args.head_cpus, args.head_gpus) as cluster:
        for spec in args.node:
            cpus, _, gpus = spec.partition(":")
            cluster.add_node(int(cpus), int(gpus or 0))
        print(f"RAY_ADDRESS={cluster.address}  nodes: "
              f"{[(n['ip'], n['cpus'], n['gpus']) for n in cluster.nodes.values()]}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
