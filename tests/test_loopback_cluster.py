"""The Ray clusters kpbench starts on one machine listen on loopback addresses only: every
listening TCP socket of their processes (from /proc/net/tcp and tcp6, matched to the
processes by socket inode) is on 127.0.0.0/8 or ::1, once a task has run."""
from __future__ import annotations

import ipaddress
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("ray")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from local_cluster import LocalCluster  # noqa: E402

LISTEN = "0A"   # the TCP state column of /proc/net/tcp*
# a driver (kpbench's connect_ray) that runs a task on each of the two nodes of the cluster
# at ``argv[1]``, prints on how many nodes they ran, then waits for stdin to close
DRIVER = """
import sys, time
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from kpbench.bench.executors.cluster import connect_ray
from kpbench.bench.settings import Settings
ray = connect_ray(Settings(address=sys.argv[1]))
while sum(node["Alive"] for node in ray.nodes()) < 2:   # the second raylet registering
    time.sleep(0.2)
@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()
on = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
      for node in ray.nodes() if node["Alive"]]
print(len(set(ray.get([task.remote() for task in on], timeout=120))), flush=True)
sys.stdin.read()
"""


def _address(hex_address: str) -> tuple[ipaddress._BaseAddress, int]:
    """An address of /proc/net/tcp (``0100007F:1F90``) or tcp6 (four little-endian words)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def listening(pids) -> list[tuple[int, str, str, int]]:
    """(pid, command, address, port) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        try:
            for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue   # gone, or not ours to read
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in owner:
                address, port = _address(fields[1])
                pid = owner[fields[9]]
                found.append((pid, _command(pid), str(address), port))
    return found


def _command(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()[-40:]
    except OSError:
        return "?"


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _stat() -> dict[int, tuple[int, int]]:
    """pid -> (parent, process group) of every process."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in _stat().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def in_groups(groups) -> list[int]:
    return [pid for pid, (_, group) in _stat().items() if group in groups]


def assert_loopback_only(sockets) -> None:
    commands = {command for _, command, _, _ in sockets}
    # the cluster really is there: its GCS and raylet listen (so this cannot pass empty)
    assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands), sockets
    exposed = [s for s in sockets if not _loopback(s[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_the_local_cluster_listens_on_loopback_only(ray_cluster):
    @ray_cluster.remote(num_cpus=1)
    def pid():
        return os.getpid()

    worker = ray_cluster.get(pid.remote())
    # this process started the cluster: GCS, raylet, agents, workers are its descendants
    pids = descendants(os.getpid())
    assert worker in pids
    assert_loopback_only(listening(pids))


@pytest.mark.slow
def test_a_two_node_local_cluster_and_its_driver_listen_on_loopback_only():
    with LocalCluster(head_cpus=1) as cluster:
        cluster.add_node(cpus=1)
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        try:
            assert driver.stdout.readline().strip() == "2"   # both nodes ran a task
            nodes = in_groups({group.pid for group in cluster.groups})   # each node a group
            assert_loopback_only(listening(nodes + descendants(driver.pid)))
        finally:
            driver.stdin.close()
            driver.wait(timeout=60)
