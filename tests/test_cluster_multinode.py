"""Sweeps on a real multi-node Ray cluster on this machine (scripts/local_cluster.py, loopback
only): one head raylet (1 CPU, 2 GPUs declared) and a second raylet (1 CPU, no GPU), the rows
telling them apart by Ray node id, driven by scripts/ray_sweep.py as ``ray submit`` would. In file order, on one cluster:
points spread over both nodes (1 vs 2 nodes), Ray's GPU scheduling seen in the rows, the
driver killed, the second node killed."""
from __future__ import annotations

import pathlib
import sys

import pytest

pytest.importorskip("ray")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import multinode_sweep as mn  # noqa: E402
from local_cluster import LocalCluster  # noqa: E402

from kpbench.bench.parse import sweep_from_dict  # noqa: E402
from kpbench.bench.plan import expand  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(test_ops):   # test_ops: _test_sleep is known here (the drivers load the plugin)
    with LocalCluster(head_cpus=1, head_gpus=2) as started:
        yield started


def sweep_keys(args: list[str]) -> set[str]:
    """The keys of the points that ``kpbench sweep`` ``args`` (a sleep sweep) measure."""
    values = dict(zip(args[1::2], args[2::2]))
    spec, _ = sweep_from_dict({"kind": args[0], "ops": values["--ops"], "backends": values["--backends"],
                                      "dtype": values["--dtype"], "N": values["--N"], "blur": values["--blur"],
                                      "seed": values["--seed"]})
    return {p.key(args[0]) for p in expand(spec)}


def test_a_sweep_spreads_over_two_nodes_and_runs_faster(cluster, tmp_path):
    result = mn.scenario_ratio(cluster, tmp_path, points=40)
    one, two = result["1node"], result["2node"]
    head, second = result["nodes"]
    assert one["ok"] == two["ok"] == 40
    assert one["points_per_node"] == {head: 40}
    assert set(two["points_per_node"]) == {head, second}
    assert min(two["points_per_node"].values()) >= 10, result
    # one CPU per node, 0.5 s sleeps: twice the slots, close to twice the throughput once
    # both nodes run (each new driver pays one worker start-up per node: seconds)
    assert result["ratio_steady_points_per_hour"] >= 1.8, result
    assert result["ratio_points_per_hour"] >= 1.3, result


def test_cuda_points_get_one_gpu_each_on_the_gpu_node_only(cluster, tmp_path):
    result = mn.scenario_gpu(cluster, tmp_path, points=6)
    cuda = result["rows"]
    assert len(cuda) == 6 and (cuda["device"] == "cuda").all() and (cuda["status"] == "ok").all()
    # every CUDA point got exactly one GPU id, of the two the head declares
    assert set(cuda["gpu_ids"]) == {"0", "1"}
    # and ran on the head, the node with GPUs (the row names node and GPU), never on the
    # GPU-less node though its CPU was free
    assert set(cuda["node"]) == {result["head"]}
    assert result["gpu_less"] not in set(cuda["node"])
    # two at the same time on the 2-GPU node, never two on one GPU at once
    assert mn.overlapping_pairs(cuda) >= 2
    for _, on_one_gpu in cuda.groupby("gpu_ids"):
        assert mn.overlapping_pairs(on_one_gpu) == 0
    assert (cuda["point_ended_at"] > cuda["point_started_at"]).all()


def test_killing_the_driver_keeps_its_rows_and_a_rerun_resumes(cluster, tmp_path):
    result = mn.scenario_kill_driver(cluster, tmp_path, points=16)
    before, after = result["before"], result["after"]
    assert 4 <= len(before) < 16 and before["key"].is_unique
    assert len(after) == 16 and after["key"].is_unique and (after["status"] == "ok").all()
    assert set(before["key"]) < set(after["key"]) == sweep_keys(mn.sweep_args(16, "sleep", 0.5))
    assert f"{len(before)} already stored" in result["rerun_output"]


def test_a_node_dying_mid_sweep_is_recorded_and_a_rerun_completes(cluster, tmp_path):
    result = mn.scenario_kill_node(cluster, tmp_path, points=16)
    first, after = result["first"], result["after"]
    assert result["driver_rc"] == 0, result["first_output"]   # the sweep finished
    died = first[first["status"] == "error"]
    assert len(died) >= 1 and died["error"].str.startswith("node died: NodeDiedError").all()
    assert set(died["node"]) == {result["second_node"]}
    assert len(first) == 16 and first["key"].is_unique            # every point has a row
    assert (first.loc[first["status"] != "error", "status"] == "ok").all()
    # the rerun (--retry-failed) measures the points that died again, and only those
    assert f"{16 - len(died)} already stored" in result["rerun_output"], result["rerun_output"]
    measured = after[after["status"] == "ok"]
    assert len(after) == 16 + len(died) and measured["key"].is_unique
    assert set(measured["key"]) == sweep_keys(mn.sweep_args(16, "sleep", 0.5))
    head = next(n for n in cluster.alive_nodes() if n != result["second_node"])
    assert set(measured.loc[measured["key"].isin(died["key"]), "node"]) == {head}
